import type { FileHandle } from "node:fs/promises";
import { CHUNK_BYTES } from "./blob-store";

/**
 * Streams an already opened file from `offset` to `end` in CHUNK_BYTES reads.
 * Holding the handle (not the path) is what lets a read finish after the blob
 * is evicted and unlinked. Each chunk is a fresh buffer because consumers may
 * keep chunks while asking for the next one; memory stays flat as they drop them.
 * `return()` closes the handle even if iteration never started.
 */
export class FileChunks implements AsyncIterableIterator<Uint8Array> {
  private position: number;
  private closed = false;

  constructor(
    private readonly handle: FileHandle,
    offset: number,
    private readonly end: number,
  ) {
    this.position = offset;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  async next(): Promise<IteratorResult<Uint8Array>> {
    if (this.closed) return { done: true, value: undefined };
    if (this.position >= this.end) {
      await this.close();
      return { done: true, value: undefined };
    }
    const want = Math.min(CHUNK_BYTES, this.end - this.position);
    const buf = new Uint8Array(want);
    let got = 0;
    try {
      while (got < want) {
        const { bytesRead } = await this.handle.read(buf, got, want - got, this.position + got);
        if (bytesRead === 0) throw new Error(`file ended ${this.end - this.position - got} bytes early`);
        got += bytesRead;
      }
    } catch (err) {
      await this.close();
      throw err;
    }
    this.position += got;
    return { done: false, value: buf };
  }

  async return(): Promise<IteratorResult<Uint8Array>> {
    await this.close();
    return { done: true, value: undefined };
  }

  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close().catch(() => undefined);
  }
}
