import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import { formatDigest } from "../digest/digest";
import { createHasher, type Hasher } from "../digest/hasher";
import { GrpcCode, RpcError, wrapError } from "../errors";
import {
  CHECKSUM_BYTES,
  END_MAGIC,
  FOOTER_BYTES,
  FORMAT_VERSION,
  MAX_HEADER_BYTES,
  START_MAGIC,
  checkActionResultFrame,
  decodeFrame,
  type ActionResultFrame,
  type BlobFrame,
  type BundleHeader,
  type EndFrame,
} from "./format";

const READ_BYTES = 1024 * 1024;

/** What a walk over a bundle hands to its caller, in file order. */
export interface BundleVisitor {
  header?(h: BundleHeader): Promise<void> | void;
  /**
   * One blob. `body` yields its bytes (chunks are only valid until the next
   * one is asked for) and has already been checked against the digest when
   * it ends without throwing. Whatever the visitor leaves unread is skipped.
   */
  blob?(frame: BlobFrame, body: AsyncIterable<Uint8Array>): Promise<void>;
  /** One action result, only once its instance name and result passed the checks a client's upload gets. */
  actionResult?(frame: ActionResultFrame): Promise<void> | void;
}

/**
 * A bundle that is not intact (truncated, damaged, or not a bundle at all) or
 * that holds an action result lre would not accept from a client. The message
 * names the file, the entry and what is wrong.
 */
export class DamagedBundleError extends RpcError {}

/**
 * Reads the bundle at `path` from start to end, verifying the framing, every
 * blob against its digest, the totals and the checksum of the whole file.
 * Throws DamagedBundleError on the first problem; a visitor's own errors pass
 * through unchanged. Memory stays flat whatever the blob sizes.
 */
export async function walkBundle(path: string, visitor: BundleVisitor = {}): Promise<{ header: BundleHeader; end: EndFrame }> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw wrapError(err, `cannot open bundle "${path}"`);
  }
  try {
    return await new Walk(path, handle, (await handle.stat()).size).run(visitor);
  } finally {
    await handle.close();
  }
}

class Walk {
  private readonly hasher: Hasher = createHasher("sha256");
  private readonly buf = Buffer.allocUnsafe(READ_BYTES);
  private bufStart = 0;
  private bufEnd = 0;
  /** File offset of buf[bufStart]. */
  private pos = 0;
  /** Frames must end exactly here, where the footer starts. */
  private readonly limit: number;

  constructor(
    private readonly path: string,
    private readonly handle: FileHandle,
    private readonly size: number,
  ) {
    this.limit = size - FOOTER_BYTES;
  }

  private damaged(why: string): DamagedBundleError {
    return new DamagedBundleError(GrpcCode.INVALID_ARGUMENT, `bundle "${this.path}" is damaged: ${why}`);
  }

  async run(visitor: BundleVisitor): Promise<{ header: BundleHeader; end: EndFrame }> {
    if (this.size < START_MAGIC.byteLength + FOOTER_BYTES) {
      throw this.damaged(`it is only ${this.size} bytes, too short for an lre bundle (truncated, or not a bundle)`);
    }
    const footer = await this.pread(this.limit, FOOTER_BYTES);
    const expectedChecksum = footer.subarray(0, CHECKSUM_BYTES);
    if (!bytesEqual(footer.subarray(CHECKSUM_BYTES), END_MAGIC)) {
      const start = await this.pread(0, START_MAGIC.byteLength);
      throw this.damaged(
        bytesEqual(start, START_MAGIC)
          ? "it does not end with the end marker, so it is truncated (or its last bytes were changed)"
          : "it is not an lre bundle (no start marker or end marker)",
      );
    }
    if (!bytesEqual(await this.take(START_MAGIC.byteLength), START_MAGIC)) throw this.damaged("it does not start with the lre bundle marker");

    const first = await this.frame();
    if (first.kind !== "bundle") throw this.damaged(`its first frame is "${first.kind}", not the bundle header`);
    if (first.version !== FORMAT_VERSION) {
      throw this.damaged(`it has format version ${first.version}; this lre reads version ${FORMAT_VERSION} (a newer lre wrote it?)`);
    }
    await visitor.header?.(first);

    let blobs = 0;
    let blobBytes = 0;
    let actionResults = 0;
    for (;;) {
      const at = this.offset;
      const f = await this.frame();
      if (f.kind === "bundle") throw this.damaged(`a second bundle header at byte ${at}`);
      if (f.kind === "blob") {
        if (actionResults > 0) throw this.damaged(`blob at byte ${at} comes after action results`);
        const size = f.digest.sizeBytes;
        if (size > this.limit - this.offset) throw this.damaged(`blob ${formatDigest(f.digest)} at byte ${at} runs past the end of the file`);
        const body = new BlobBody(this, f, at);
        try {
          await visitor.blob?.(f, body);
        } finally {
          body.closed = true;
        }
        await body.finish();
        blobs++;
        blobBytes += size;
        continue;
      }
      if (f.kind === "action-result") {
        this.check(f, at);
        await visitor.actionResult?.(f);
        actionResults++;
        continue;
      }
      if (this.offset !== this.limit) throw this.damaged(`the end frame at byte ${at} is followed by ${this.limit - this.offset} more bytes`);
      if (f.blobs !== blobs || f.blobBytes !== blobBytes || f.actionResults !== actionResults) {
        throw this.damaged(
          `its totals say ${f.blobs} blobs (${f.blobBytes} bytes) and ${f.actionResults} action results, but it holds ${blobs} (${blobBytes} bytes) and ${actionResults}`,
        );
      }
      const actual = Buffer.from(this.hasher.hex(), "hex");
      if (!bytesEqual(actual, expectedChecksum)) {
        throw this.damaged(
          `its checksum does not match its contents (file says ${Buffer.from(expectedChecksum).toString("hex")}, contents hash to ${actual.toString("hex")})`,
        );
      }
      return { header: first, end: f };
    }
  }

  /**
   * Checked as soon as it is read, so a visitor never sees an entry lre would
   * refuse, and an import fails in its verify pass, before writing anything.
   */
  private check(f: ActionResultFrame, at: number): void {
    try {
      checkActionResultFrame(f);
    } catch (err) {
      const entry = `action ${formatDigest(f.action)} in instance ${JSON.stringify(f.instance.slice(0, 80))}`;
      throw new DamagedBundleError(
        GrpcCode.INVALID_ARGUMENT,
        `bundle "${this.path}" holds an action result lre does not accept (the one at byte ${at}, for ${entry}): ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }

  get offset(): number {
    return this.pos;
  }

  private async frame() {
    const at = this.offset;
    if (this.limit - at < 4) throw this.damaged(`frames stop at byte ${at} without an end frame`);
    const len = new DataView((await this.take(4)).buffer).getUint32(0);
    if (len > MAX_HEADER_BYTES || len > this.limit - this.offset) {
      throw this.damaged(`the frame at byte ${at} claims a ${len}-byte header, which does not fit`);
    }
    try {
      return decodeFrame(await this.take(len));
    } catch (err) {
      throw this.damaged(`the frame at byte ${at}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Exactly n bytes as a fresh copy, hashed into the checksum. */
  async take(n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = await this.next(n - filled);
      out.set(chunk, filled);
      filled += chunk.byteLength;
    }
    return out;
  }

  /** Up to n bytes (at least one) as a view into the read buffer, hashed into the checksum. */
  async next(n: number): Promise<Uint8Array> {
    if (this.bufStart === this.bufEnd) await this.fill();
    const len = Math.min(n, this.bufEnd - this.bufStart);
    const view = this.buf.subarray(this.bufStart, this.bufStart + len);
    this.bufStart += len;
    this.pos += len;
    this.hasher.update(view);
    return view;
  }

  private async fill(): Promise<void> {
    const want = Math.min(READ_BYTES, this.limit - this.pos);
    if (want <= 0) throw this.damaged(`it ends at byte ${this.pos} in the middle of a frame`);
    const { bytesRead } = await this.handle.read(this.buf, 0, want, this.pos);
    if (bytesRead === 0) throw this.damaged(`it ends at byte ${this.pos}, earlier than its size said (changed while being read?)`);
    this.bufStart = 0;
    this.bufEnd = bytesRead;
  }

  private async pread(at: number, n: number): Promise<Uint8Array> {
    const out = Buffer.alloc(n);
    const { bytesRead } = await this.handle.read(out, 0, n, at);
    return out.subarray(0, bytesRead);
  }

  damagedBlob(f: BlobFrame, at: number): DamagedBundleError {
    return this.damaged(`blob ${formatDigest(f.digest)} at byte ${at} does not match its digest`);
  }
}

/** A blob's bytes, hashed as they pass; reading past what the visitor consumed happens in `finish`. */
class BlobBody implements AsyncIterable<Uint8Array> {
  private readonly hasher: Hasher;
  private remaining: number;
  private started = false;
  closed = false;

  constructor(
    private readonly walk: Walk,
    private readonly frame: BlobFrame,
    private readonly at: number,
  ) {
    this.hasher = createHasher(frame.digest.fn);
    this.remaining = frame.digest.sizeBytes;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    if (this.started) throw new Error("a blob body can be read once");
    this.started = true;
    while (this.remaining > 0 && !this.closed) yield await this.step();
    this.check();
  }

  async finish(): Promise<void> {
    if (this.remaining === 0 && this.started) return;
    while (this.remaining > 0) await this.step();
    this.check();
  }

  private async step(): Promise<Uint8Array> {
    const chunk = await this.walk.next(this.remaining);
    this.hasher.update(chunk);
    this.remaining -= chunk.byteLength;
    return chunk;
  }

  private checked = false;
  private check(): void {
    if (this.checked) return;
    this.checked = true;
    if (this.hasher.hex() !== this.frame.digest.hash) throw this.walk.damagedBlob(this.frame, this.at);
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
