import type { Digest } from "../digest/digest";
import type { BlobStore, BlobWriter, StoredBlob } from "./blob-store";

/**
 * A decorator's starting point: every call goes to `base` unchanged, so each
 * decorator spells out only the calls whose behaviour it changes.
 */
export abstract class ForwardingBlobStore implements BlobStore {
  abstract readonly name: string;

  constructor(protected readonly base: BlobStore) {}

  findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return this.base.findMissing(digests);
  }

  get(digest: Digest): Promise<Uint8Array> {
    return this.base.get(digest);
  }

  read(digest: Digest, offset?: number): Promise<AsyncIterable<Uint8Array>> {
    return this.base.read(digest, offset);
  }

  put(digest: Digest, data: Uint8Array): Promise<void> {
    return this.base.put(digest, data);
  }

  beginWrite(digest: Digest): Promise<BlobWriter> {
    return this.base.beginWrite(digest);
  }

  delete(digests: readonly Digest[]): Promise<void> {
    return this.base.delete(digests);
  }

  async filePath(digest: Digest): Promise<string | undefined> {
    return this.base.filePath?.(digest);
  }

  list(): AsyncIterable<StoredBlob> {
    return this.base.list();
  }

  touch(digests: readonly Digest[]): Promise<void> {
    return this.base.touch(digests);
  }

  close(): Promise<void> {
    return this.base.close();
  }
}
