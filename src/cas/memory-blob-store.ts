import type { Clock } from "../clock";
import { systemClock } from "../clock";
import type { Digest } from "../digest/digest";
import { digestKey } from "../digest/digest";
import { createHasher, hashBytes } from "../digest/hasher";
import { chunksOf } from "./blob-reader";
import type { BlobStore, BlobWriter, StoredBlob } from "./blob-store";
import { blobNotFound, checkHash, checkReadOffset, checkSize, storeClosed, writeFinished } from "./checks";

export interface MemoryBlobStoreOptions {
  clock?: Clock;
  /**
   * Check each blob's hash on put/commit (default true). The in-memory store is
   * mostly used on its own in tests of other layers, where accepting corrupt
   * bytes silently would hide bugs; stacks that put a VerifyingBlobStore on top
   * may turn it off to avoid hashing twice.
   */
  verify?: boolean;
}

interface Entry {
  readonly digest: Digest;
  readonly data: Uint8Array;
  lastUsedMs: number;
}

/**
 * A BlobStore in a Map: for tests and for callers that need no persistence.
 * Stored bytes are private copies, so callers may reuse their buffers.
 */
export class MemoryBlobStore implements BlobStore {
  readonly name = "memory";
  private readonly clock: Clock;
  private readonly verify: boolean;
  private readonly blobs = new Map<string, Entry>();
  private closed = false;

  constructor(options: MemoryBlobStoreOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.verify = options.verify ?? true;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    this.checkOpen();
    const now = this.clock.nowMs();
    const missing: Digest[] = [];
    for (const d of digests) {
      const e = this.blobs.get(digestKey(d));
      if (e === undefined) missing.push(d);
      else e.lastUsedMs = now;
    }
    return missing;
  }

  async get(digest: Digest): Promise<Uint8Array> {
    return this.use(digest).data.slice();
  }

  async read(digest: Digest, offset = 0): Promise<AsyncIterable<Uint8Array>> {
    checkReadOffset(digest, offset);
    // The entry's buffer is never mutated, so the stream survives a delete.
    return chunksOf(this.use(digest).data, offset);
  }

  async put(digest: Digest, data: Uint8Array): Promise<void> {
    this.checkOpen();
    checkSize(digest, data.byteLength);
    if (this.verify) checkHash(digest, hashBytes(digest.fn, data));
    this.store(digest, data.slice());
  }

  async beginWrite(digest: Digest): Promise<BlobWriter> {
    this.checkOpen();
    return new MemoryBlobWriter(digest, this.verify, (data) => this.store(digest, data));
  }

  async delete(digests: readonly Digest[]): Promise<void> {
    this.checkOpen();
    for (const d of digests) this.blobs.delete(digestKey(d));
  }

  async filePath(_digest: Digest): Promise<string | undefined> {
    return undefined;
  }

  async *list(): AsyncGenerator<StoredBlob> {
    this.checkOpen();
    for (const e of [...this.blobs.values()]) yield { digest: e.digest, lastUsedMs: e.lastUsedMs };
  }

  async touch(digests: readonly Digest[]): Promise<void> {
    this.checkOpen();
    const now = this.clock.nowMs();
    for (const d of digests) {
      const e = this.blobs.get(digestKey(d));
      if (e !== undefined) e.lastUsedMs = now;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.blobs.clear();
  }

  private store(digest: Digest, data: Uint8Array): void {
    this.checkOpen();
    const key = digestKey(digest);
    const now = this.clock.nowMs();
    const existing = this.blobs.get(key);
    if (existing !== undefined) existing.lastUsedMs = now;
    else this.blobs.set(key, { digest: { fn: digest.fn, hash: digest.hash, sizeBytes: digest.sizeBytes }, data, lastUsedMs: now });
  }

  private use(digest: Digest): Entry {
    this.checkOpen();
    const e = this.blobs.get(digestKey(digest));
    if (e === undefined) throw blobNotFound(digest);
    e.lastUsedMs = this.clock.nowMs();
    return e;
  }

  private checkOpen(): void {
    if (this.closed) throw storeClosed(this.name);
  }
}

class MemoryBlobWriter implements BlobWriter {
  private chunks: Uint8Array[] = [];
  private written = 0;
  private done = false;
  private readonly hasher;

  constructor(
    readonly digest: Digest,
    private readonly verify: boolean,
    private readonly publish: (data: Uint8Array) => void,
  ) {
    this.hasher = verify ? createHasher(digest.fn) : undefined;
  }

  get bytesWritten(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw writeFinished(this.digest);
    if (this.written + chunk.byteLength > this.digest.sizeBytes) {
      await this.abort();
      checkSize(this.digest, this.written + chunk.byteLength);
    }
    this.chunks.push(chunk.slice());
    this.hasher?.update(chunk);
    this.written += chunk.byteLength;
  }

  async commit(): Promise<void> {
    if (this.done) throw writeFinished(this.digest);
    this.done = true;
    const chunks = this.chunks;
    this.chunks = [];
    checkSize(this.digest, this.written);
    if (this.hasher !== undefined) checkHash(this.digest, this.hasher.hex());
    const data = new Uint8Array(this.written);
    let at = 0;
    for (const c of chunks) {
      data.set(c, at);
      at += c.byteLength;
    }
    this.publish(data);
  }

  async abort(): Promise<void> {
    this.done = true;
    this.chunks = [];
  }
}
