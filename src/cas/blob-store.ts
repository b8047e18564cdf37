import type { Digest } from "../digest/digest";

/**
 * Content-addressable storage. Every implementation and decorator speaks this
 * interface, and one conformance suite (test/cas/blob-store.conformance.ts)
 * runs against each of them.
 *
 * Errors are RpcError: NOT_FOUND for an absent blob, INVALID_ARGUMENT for
 * bytes that do not match their digest, RESOURCE_EXHAUSTED when the store is
 * full of blobs it may not evict.
 */
export interface BlobStore {
  readonly name: string;

  /** The digests not present. Reporting a blob present counts as a use (it extends its lifetime). */
  findMissing(digests: readonly Digest[]): Promise<Digest[]>;

  /** A whole blob in memory. Meant for small blobs (Directory, Command, batch reads). */
  get(digest: Digest): Promise<Uint8Array>;

  /**
   * Streams a blob from `offset` in chunks of at most `CHUNK_BYTES`, with flat
   * memory whatever the blob's size. Fails with NOT_FOUND before yielding when
   * the blob is absent. An open read completes even if the blob is evicted meanwhile.
   */
  read(digest: Digest, offset?: number): Promise<AsyncIterable<Uint8Array>>;

  /** Stores a blob held in memory. Resolves only once it is durable. */
  put(digest: Digest, data: Uint8Array): Promise<void>;

  /** Starts a streamed upload; nothing becomes visible until `commit` resolves. */
  beginWrite(digest: Digest): Promise<BlobWriter>;

  /** Removes blobs (eviction, repair of corrupt data). Absent blobs are ignored. */
  delete(digests: readonly Digest[]): Promise<void>;

  /**
   * A file holding exactly the blob's bytes that may be hard-linked read-only
   * (input staging), or undefined when the store keeps it elsewhere.
   */
  filePath?(digest: Digest): Promise<string | undefined>;

  /** Every stored blob with its last use, for eviction bookkeeping and `lre stats`. */
  list(): AsyncIterable<StoredBlob>;

  /** Records uses (reads, action-cache hits, staging) so eviction spares them. */
  touch(digests: readonly Digest[]): Promise<void>;

  close(): Promise<void>;
}

export interface StoredBlob {
  readonly digest: Digest;
  readonly lastUsedMs: number;
}

/** A streamed upload into a BlobStore. */
export interface BlobWriter {
  readonly digest: Digest;
  /** Bytes accepted so far (the resumable-upload offset). */
  readonly bytesWritten: number;
  write(chunk: Uint8Array): Promise<void>;
  /** Verifies size and hash, makes the blob durable and visible. INVALID_ARGUMENT on mismatch, leaving nothing behind. */
  commit(): Promise<void>;
  /** Discards the upload. Safe to call more than once and after a failed commit. */
  abort(): Promise<void>;
}

/** Largest chunk a read yields; under gRPC's 4 MiB message limit with room for framing. */
export const CHUNK_BYTES = 1024 * 1024;
