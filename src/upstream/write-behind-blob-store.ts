import type { BlobStore, BlobWriter, StoredBlob } from "../cas/blob-store";
import { type Digest, isEmptyDigest } from "../digest/digest";
import type { WriteBehindQueue } from "./write-behind-queue";

/**
 * Queues every blob stored through it for upload to the upstream. The entry
 * is committed before the write resolves, so a blob acknowledged to a client
 * is either uploaded or still queued after a crash. Blobs copied in from the
 * upstream by the read-through layer below do not pass through here.
 */
export class WriteBehindBlobStore implements BlobStore {
  readonly name: string;

  constructor(
    private readonly base: BlobStore,
    private readonly queue: WriteBehindQueue,
  ) {
    this.name = `write-behind(${base.name})`;
  }

  findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    return this.base.findMissing(digests);
  }

  get(digest: Digest): Promise<Uint8Array> {
    return this.base.get(digest);
  }

  read(digest: Digest, offset?: number): Promise<AsyncIterable<Uint8Array>> {
    return this.base.read(digest, offset);
  }

  async put(digest: Digest, data: Uint8Array): Promise<void> {
    await this.base.put(digest, data);
    if (!isEmptyDigest(digest)) await this.queue.enqueueBlob(digest);
  }

  async beginWrite(digest: Digest): Promise<BlobWriter> {
    const writer = await this.base.beginWrite(digest);
    const queue = this.queue;
    return {
      digest: writer.digest,
      get bytesWritten() {
        return writer.bytesWritten;
      },
      write: (chunk) => writer.write(chunk),
      async commit() {
        await writer.commit();
        if (!isEmptyDigest(digest)) await queue.enqueueBlob(digest);
      },
      abort: () => writer.abort(),
    };
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
