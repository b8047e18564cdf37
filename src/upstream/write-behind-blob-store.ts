import type { BlobStore, BlobWriter } from "../cas/blob-store";
import { type Digest, isEmptyDigest } from "../digest/digest";
import type { WriteBehindQueue } from "./write-behind-queue";
import { ForwardingBlobStore } from "../cas/forwarding-blob-store";

/**
 * Queues every blob stored through it for upload to the upstream. The entry
 * is committed before the write resolves, so a blob acknowledged to a client
 * is either uploaded or still queued after a crash. Blobs copied in from the
 * upstream by the read-through layer below do not pass through here.
 */
export class WriteBehindBlobStore extends ForwardingBlobStore {
  override readonly name: string;

  constructor(
    base: BlobStore,
    private readonly queue: WriteBehindQueue,
  ) {
    super(base);
    this.name = `write-behind(${base.name})`;
  }

  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    await this.base.put(digest, data);
    if (!isEmptyDigest(digest)) await this.queue.enqueueBlob(digest);
  }

  override async beginWrite(digest: Digest): Promise<BlobWriter> {
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
}
