import type { FileHandle } from "node:fs/promises";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";
import type { Digest } from "../digest/digest";
import { formatDigest } from "../digest/digest";
import { createHasher, type Hasher } from "../digest/hasher";
import { RpcError, wrapError } from "../errors";
import { END_MAGIC, START_MAGIC, encodeFrame, type ActionResultFrame, type BundleHeader, type EndFrame } from "./format";

/** Small frames are gathered up to this size before a write, so a million tiny blobs are not a million syscalls. */
const BUFFER_BYTES = 1024 * 1024;

/**
 * Writes one bundle file. Everything goes to a temporary file beside the
 * target, renamed into place only by `finish`, so a failed or interrupted
 * export never leaves something that looks like a bundle.
 */
export class BundleWriter {
  private readonly hasher: Hasher = createHasher("sha256");
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private blobs = 0;
  private blobBytes = 0;
  private actionResults = 0;
  private phase: "blobs" | "action-results" | "done" = "blobs";
  private written = 0;

  private constructor(
    private readonly path: string,
    private readonly tmp: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string, header: Omit<BundleHeader, "kind" | "version">, version: number): Promise<BundleWriter> {
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString("hex")}.partial`);
    let handle: FileHandle;
    try {
      handle = await open(tmp, "wx", 0o644);
    } catch (err) {
      throw wrapError(err, `cannot create "${tmp}"`);
    }
    const w = new BundleWriter(path, tmp, handle);
    try {
      await w.emit(START_MAGIC);
      await w.emit(encodeFrame({ kind: "bundle", version, ...header }));
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  /** Bytes in the file so far. */
  get bytes(): number {
    return this.written + this.pendingBytes;
  }

  /** Appends a blob; `chunks` must yield exactly `digest.sizeBytes` bytes. */
  async addBlob(digest: Digest, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.phase !== "blobs") throw new Error("blobs must come before action results");
    await this.emit(encodeFrame({ kind: "blob", digest }));
    let n = 0;
    for await (const chunk of chunks) {
      n += chunk.byteLength;
      if (n > digest.sizeBytes) break;
      await this.emit(chunk);
    }
    if (n !== digest.sizeBytes) {
      throw RpcError.internal(`blob ${formatDigest(digest)} yielded ${n} bytes while being exported, not ${digest.sizeBytes}`);
    }
    this.blobs++;
    this.blobBytes += digest.sizeBytes;
  }

  async addActionResult(frame: Omit<ActionResultFrame, "kind">): Promise<void> {
    if (this.phase === "done") throw new Error("the bundle is finished");
    this.phase = "action-results";
    await this.emit(encodeFrame({ kind: "action-result", ...frame }));
    this.actionResults++;
  }

  /** Writes totals and footer, syncs, and moves the file into place. */
  async finish(): Promise<Omit<EndFrame, "kind">> {
    this.phase = "done";
    const totals = { blobs: this.blobs, blobBytes: this.blobBytes, actionResults: this.actionResults };
    try {
      await this.emit(encodeFrame({ kind: "end", ...totals }));
      await this.flush();
      const checksum = Buffer.from(this.hasher.hex(), "hex");
      await this.writeAll(checksum);
      await this.writeAll(END_MAGIC);
      await this.handle.sync();
      await this.handle.close();
      await rename(this.tmp, this.path);
    } catch (err) {
      await this.abort();
      throw wrapError(err, `writing bundle "${this.path}"`);
    }
    return totals;
  }

  /** Drops the temporary file. Safe after finish or a failure. */
  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    await unlink(this.tmp).catch(() => undefined);
  }

  private async emit(bytes: Uint8Array): Promise<void> {
    this.hasher.update(bytes);
    if (bytes.byteLength >= BUFFER_BYTES) {
      await this.flush();
      await this.writeAll(bytes);
      return;
    }
    // A chunk from a blob reader may be reused by it after the next read; keep a copy.
    this.pending.push(bytes.slice());
    this.pendingBytes += bytes.byteLength;
    if (this.pendingBytes >= BUFFER_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const data = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    await this.writeAll(data);
  }

  private async writeAll(data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.byteLength) {
      const { bytesWritten } = await this.handle.write(data, at, data.byteLength - at);
      at += bytesWritten;
    }
    this.written += data.byteLength;
  }
}
