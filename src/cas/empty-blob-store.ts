import type { Digest } from "../digest/digest";
import { isEmptyDigest } from "../digest/digest";
import { chunksOf } from "./blob-reader";
import type { BlobStore, BlobWriter, StoredBlob } from "./blob-store";
import { checkReadOffset, checkSize, writeFinished } from "./checks";

/**
 * Makes the empty blob of every digest function always present. REAPI says
 * servers must treat it as present, and clients skip uploading it, so it must
 * never be listed missing, never evicted and never cost storage
 * (reliability-targets I-6).
 */
export class EmptyBlobStore implements BlobStore {
  readonly name: string;

  constructor(private readonly base: BlobStore) {
    this.name = `empty(${base.name})`;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const rest = digests.filter((d) => !isEmptyDigest(d));
    return rest.length === 0 ? [] : this.base.findMissing(rest);
  }

  async get(digest: Digest): Promise<Uint8Array> {
    return isEmptyDigest(digest) ? new Uint8Array(0) : this.base.get(digest);
  }

  async read(digest: Digest, offset = 0): Promise<AsyncIterable<Uint8Array>> {
    if (!isEmptyDigest(digest)) return this.base.read(digest, offset);
    checkReadOffset(digest, offset);
    return chunksOf(new Uint8Array(0));
  }

  async put(digest: Digest, data: Uint8Array): Promise<void> {
    if (!isEmptyDigest(digest)) return this.base.put(digest, data);
    checkSize(digest, data.byteLength);
  }

  async beginWrite(digest: Digest): Promise<BlobWriter> {
    return isEmptyDigest(digest) ? new EmptyWriter(digest) : this.base.beginWrite(digest);
  }

  delete(digests: readonly Digest[]): Promise<void> {
    return this.base.delete(digests.filter((d) => !isEmptyDigest(d)));
  }

  async filePath(digest: Digest): Promise<string | undefined> {
    if (isEmptyDigest(digest) || this.base.filePath === undefined) return undefined;
    return this.base.filePath(digest);
  }

  list(): AsyncIterable<StoredBlob> {
    return this.base.list();
  }

  touch(digests: readonly Digest[]): Promise<void> {
    return this.base.touch(digests.filter((d) => !isEmptyDigest(d)));
  }

  close(): Promise<void> {
    return this.base.close();
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
