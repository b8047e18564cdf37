import type { Digest } from "../digest/digest";
import { isEmptyDigest } from "../digest/digest";
import { chunksOf } from "./blob-reader";
import type { BlobStore, BlobWriter } from "./blob-store";
import { checkReadOffset, checkSize, writeFinished } from "./checks";
import { ForwardingBlobStore } from "./forwarding-blob-store";

/**
 * Makes the empty blob of every digest function always present. REAPI says
 * servers must treat it as present, and clients skip uploading it, so it must
 * never be listed missing, never evicted and never cost storage
 * (reliability-targets I-6).
 */
export class EmptyBlobStore extends ForwardingBlobStore {
  override readonly name: string;

  constructor(base: BlobStore) {
    super(base);
    this.name = `empty(${base.name})`;
  }

  override async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const rest = digests.filter((d) => !isEmptyDigest(d));
    return rest.length === 0 ? [] : this.base.findMissing(rest);
  }

  override async get(digest: Digest): Promise<Uint8Array> {
    return isEmptyDigest(digest) ? new Uint8Array(0) : this.base.get(digest);
  }

  override async read(digest: Digest, offset = 0): Promise<AsyncIterable<Uint8Array>> {
    if (!isEmptyDigest(digest)) return this.base.read(digest, offset);
    checkReadOffset(digest, offset);
    return chunksOf(new Uint8Array(0));
  }

  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    if (!isEmptyDigest(digest)) return this.base.put(digest, data);
    checkSize(digest, data.byteLength);
  }

  override async beginWrite(digest: Digest): Promise<BlobWriter> {
    return isEmptyDigest(digest) ? new EmptyWriter(digest) : this.base.beginWrite(digest);
  }

  override delete(digests: readonly Digest[]): Promise<void> {
    return this.base.delete(digests.filter((d) => !isEmptyDigest(d)));
  }

  override async filePath(digest: Digest): Promise<string | undefined> {
    if (isEmptyDigest(digest) || this.base.filePath === undefined) return undefined;
    return this.base.filePath(digest);
  }

  override touch(digests: readonly Digest[]): Promise<void> {
    return this.base.touch(digests.filter((d) => !isEmptyDigest(d)));
  }
}

class EmptyWriter implements BlobWriter {
  private written = 0;
  private done = false;

  constructor(readonly digest: Digest) {}

  get bytesWritten(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.done) throw writeFinished(this.digest);
    this.written += chunk.byteLength;
    if (this.written > 0) {
      this.done = true;
      checkSize(this.digest, this.written);
    }
  }

  async commit(): Promise<void> {
    if (this.done) throw writeFinished(this.digest);
    this.done = true;
    checkSize(this.digest, this.written);
  }

  async abort(): Promise<void> {
    this.done = true;
  }
}
