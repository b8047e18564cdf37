import type { Digest } from "../digest/digest";
import { formatDigest } from "../digest/digest";
import { createHasher, hashBytes } from "../digest/hasher";
import { RpcError } from "../errors";
import type { BlobStore, BlobWriter } from "./blob-store";
import { checkHash, checkSize, writeFinished } from "./checks";
import { ForwardingBlobStore } from "./forwarding-blob-store";

export interface VerifyingBlobStoreOptions {
  /**
   * Re-hash blobs before serving them (get, read, filePath). A blob that no
   * longer matches its digest (bit rot, a hand-edited file) is deleted and
   * reported NOT_FOUND, so the client re-uploads it instead of building with
   * corrupt bytes (reliability-targets I-3). Costs one extra hash per serve.
   */
  verifyOnRead?: boolean;
}

/**
 * Hashes every upload before the store below may publish it. A CAS that takes
 * digests on trust lets one bad client poison every later build, so a size or
 * hash mismatch is INVALID_ARGUMENT and the base write is aborted, leaving
 * nothing behind (reliability-targets I-1, I-2).
 */
export class VerifyingBlobStore extends ForwardingBlobStore {
  override readonly name: string;
  private readonly verifyOnRead: boolean;

  constructor(
    base: BlobStore,
    options: VerifyingBlobStoreOptions = {},
  ) {
    super(base);
    this.name = `verifying(${base.name})`;
    this.verifyOnRead = options.verifyOnRead ?? false;
  }

  override async get(digest: Digest): Promise<Uint8Array> {
    const data = await this.base.get(digest);
    if (this.verifyOnRead && (data.byteLength !== digest.sizeBytes || hashBytes(digest.fn, data) !== digest.hash)) {
      await this.repair(digest);
    }
    return data;
  }

  override async read(digest: Digest, offset?: number): Promise<AsyncIterable<Uint8Array>> {
    // A stream cannot take back bytes already sent, so the whole blob is
    // checked before the first byte goes out.
    if (this.verifyOnRead) await this.check(digest);
    return this.base.read(digest, offset);
  }

  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    checkSize(digest, data.byteLength);
    checkHash(digest, hashBytes(digest.fn, data));
    await this.base.put(digest, data);
  }

  override async beginWrite(digest: Digest): Promise<BlobWriter> {
    return new VerifyingWriter(digest, await this.base.beginWrite(digest));
  }

  override async filePath(digest: Digest): Promise<string | undefined> {
    if (this.base.filePath === undefined) return undefined;
    const path = await this.base.filePath(digest);
    if (path !== undefined && this.verifyOnRead) await this.check(digest);
    return path;
  }

  private async check(digest: Digest): Promise<void> {
    const h = createHasher(digest.fn);
    let size = 0;
    for await (const chunk of await this.base.read(digest)) {
      h.update(chunk);
      size += chunk.byteLength;
    }
    if (size !== digest.sizeBytes || h.hex() !== digest.hash) await this.repair(digest);
  }

  private async repair(digest: Digest): Promise<never> {
    await this.base.delete([digest]);
    throw RpcError.notFound(
      `blob ${formatDigest(digest)} was stored corrupt and has been removed; upload it again`,
    );
  }
}

class VerifyingWriter implements BlobWriter {
  private readonly hasher;
  private finished = false;

  constructor(
    readonly digest: Digest,
    private readonly base: BlobWriter,
  ) {
    this.hasher = createHasher(digest.fn);
  }

  get bytesWritten(): number {
    return this.base.bytesWritten;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.finished) throw writeFinished(this.digest);
    if (this.base.bytesWritten + chunk.byteLength > this.digest.sizeBytes) {
      await this.abort();
      checkSize(this.digest, this.base.bytesWritten + chunk.byteLength);
    }
    this.hasher.update(chunk);
    await this.base.write(chunk);
  }

  async commit(): Promise<void> {
    if (this.finished) throw writeFinished(this.digest);
    this.finished = true;
    try {
      checkSize(this.digest, this.base.bytesWritten);
      checkHash(this.digest, this.hasher.hex());
    } catch (err) {
      await this.base.abort();
      throw err;
    }
    await this.base.commit();
  }

  async abort(): Promise<void> {
    this.finished = true;
    await this.base.abort();
  }
}
