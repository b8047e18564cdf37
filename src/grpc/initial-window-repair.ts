/**
 * Keeps Bun's HTTP/2 server from stalling streams whose client raises
 * SETTINGS_INITIAL_WINDOW_SIZE while they are open.
 *
 * RFC 9113 §6.9.2: a new initial window size changes the send window of every
 * open stream by the difference. Bun 1.4.5 does not apply that difference to
 * streams already open; its window for them stays at the old initial size plus
 * the WINDOW_UPDATEs received. grpc-go's BDP estimator raises the initial
 * window exactly that way during a large download, and then waits for the data
 * it believes it allowed before sending any further WINDOW_UPDATE, while Bun
 * waits for a WINDOW_UPDATE: ByteStream Read stops forever, usually after one
 * to a few MiB. (Measured: the server stopped at exactly 65,535 plus the
 * stream's WINDOW_UPDATEs, with the client's SETTINGS allowing 1.2 MB more.)
 *
 * The repair works on the client-to-server bytes, so Bun only ever sees flow
 * control it handles correctly: INITIAL_WINDOW_SIZE is taken out of the
 * client's SETTINGS frames (Bun keeps the default 65,535 for every stream), and
 * what the client really granted is handed to Bun as stream WINDOW_UPDATE
 * frames: right after the header block that opens a stream, and for every open
 * stream right after a SETTINGS frame that raises the size. This stays correct
 * if a later Bun applies the difference itself, since it never sees one.
 *
 * Server-to-client bytes are only watched, to know which streams Bun still
 * has: a stream is done once the server ended it (END_STREAM) or either side
 * reset it. A lowered initial window cannot be passed on (WINDOW_UPDATE only
 * grows); it applies to later streams, and open ones keep the larger window.
 * Known clients (grpc-go, grpc-java/netty, grpc-js) never lower it.
 */

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const TYPE_DATA = 0x0;
const TYPE_HEADERS = 0x1;
const TYPE_RST_STREAM = 0x3;
const TYPE_SETTINGS = 0x4;
const TYPE_CONTINUATION = 0x9;
const TYPE_WINDOW_UPDATE = 0x8;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const SETTING_BYTES = 6;
const SETTING_INITIAL_WINDOW_SIZE = 0x4;
/** RFC 9113 §6.9.2: every stream starts with this window until SETTINGS say otherwise. */
export const DEFAULT_INITIAL_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** Larger SETTINGS frames are passed on untouched; the server refuses them anyway. */
const MAX_HELD_SETTINGS = 16_384;

/** Reads the frame headers of one direction of a connection, fed chunks of any size; payloads are skipped. */
class FrameHeaderReader {
  private readonly head = Buffer.alloc(FRAME_HEADER_BYTES);
  private headFill = 0;
  private payloadLeft = 0;

  read(chunk: Buffer, onHeader: (type: number, flags: number, stream: number) => void): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - i);
        this.payloadLeft -= n;
        i += n;
        continue;
      }
      const n = Math.min(FRAME_HEADER_BYTES - this.headFill, chunk.length - i);
      chunk.copy(this.head, this.headFill, i, i + n);
      this.headFill += n;
      i += n;
      if (this.headFill < FRAME_HEADER_BYTES) return;
      this.headFill = 0;
      this.payloadLeft = this.head.readUIntBE(0, 3);
      onHeader(this.head[3] as number, this.head[4] as number, this.head.readUInt32BE(5) & 0x7fffffff);
    }
  }
}

/** A WINDOW_UPDATE frame granting `increment` bytes on `stream`. */
export function windowUpdateFrame(stream: number, increment: number): Buffer {
  const frame = Buffer.alloc(FRAME_HEADER_BYTES + 4);
  frame.writeUIntBE(4, 0, 3);
  frame[3] = TYPE_WINDOW_UPDATE;
  frame.writeUInt32BE(stream, 5);
  frame.writeUInt32BE(increment, 9);
  return frame;
}

/** One connection's flow-control repair. Feed it both directions, each in order. */
export class InitialWindowRepair {
  private readonly outbound = new FrameHeaderReader();
  private prefaceLeft = PREFACE_BYTES;
  private payloadLeft = 0;
  private frameType = -1;
  private frameFlags = 0;
  /** Client bytes held back: a frame header or SETTINGS frame the last chunk cut off. */
  private carry: Buffer | undefined;
  /** The initial window the client announced; what it believes each new stream gets. */
  private clientInitialWindow = DEFAULT_INITIAL_WINDOW;
  /** Streams the client opened that Bun may still send on. */
  private readonly open = new Set<number>();
  private highestStream = 0;
  /** A header block that opens a stream is in progress: grant its window when it ends. */
  private opening: number | undefined;
  /** Counts for tests and logs. */
  stats = { settingsRewritten: 0, windowUpdatesAdded: 0 };

  /** Client-to-server bytes in; the bytes to hand to the HTTP/2 server out. */
  fromClient(input: Buffer): Buffer[] {
    // Bytes of a frame header or SETTINGS frame cut off by the previous chunk are held and read again.
    const chunk = this.carry === undefined ? input : Buffer.concat([this.carry, input]);
    this.carry = undefined;
    const out: Buffer[] = [];
    /** Start of the bytes not yet passed on. */
    let from = 0;
    let i = 0;
    while (i < chunk.length) {
      if (this.prefaceLeft > 0) {
        const n = Math.min(this.prefaceLeft, chunk.length - i);
        this.prefaceLeft -= n;
        i += n;
        continue;
      }
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - i);
        this.payloadLeft -= n;
        i += n;
        if (this.payloadLeft === 0 && this.blockMayEnd(chunk, i, out, from)) from = i;
        continue;
      }
      if (chunk.length - i < FRAME_HEADER_BYTES) break;
      const length = chunk.readUIntBE(i, 3);
      const type = chunk[i + 3] as number;
      const flags = chunk[i + 4] as number;
      const stream = chunk.readUInt32BE(i + 5) & 0x7fffffff;
      if (type === TYPE_SETTINGS && (flags & FLAG_ACK) === 0 && length <= MAX_HELD_SETTINGS) {
        if (chunk.length - i < FRAME_HEADER_BYTES + length) break;
        if (i > from) out.push(chunk.subarray(from, i));
        out.push(...this.rewriteSettings(chunk.subarray(i, i + FRAME_HEADER_BYTES + length)));
        i += FRAME_HEADER_BYTES + length;
        from = i;
        continue;
      }
      if (type === TYPE_HEADERS && stream > this.highestStream && stream % 2 === 1) {
        this.highestStream = stream;
        this.open.add(stream);
        this.opening = stream;
      } else if (type === TYPE_RST_STREAM) {
        this.open.delete(stream);
        if (this.opening === stream) this.opening = undefined;
      }
      this.frameType = type;
      this.frameFlags = flags;
      this.payloadLeft = length;
      i += FRAME_HEADER_BYTES;
      if (length === 0 && this.blockMayEnd(chunk, i, out, from)) from = i;
    }
    if (i < chunk.length) this.carry = Buffer.from(chunk.subarray(i));
    if (i > from) out.push(chunk.subarray(from, i));
    return out;
  }

  /**
   * A frame ended at `end`. If it closed the header block that opened a
   * stream, passes on the bytes up to `end` and then the stream's grant, and
   * returns true (the caller moves its start).
   */
  private blockMayEnd(chunk: Buffer, end: number, out: Buffer[], from: number): boolean {
    const endsBlock =
      (this.frameType === TYPE_HEADERS || this.frameType === TYPE_CONTINUATION) && (this.frameFlags & FLAG_END_HEADERS) !== 0;
    if (!endsBlock || this.opening === undefined) return false;
    const stream = this.opening;
    this.opening = undefined;
    const grant = this.clientInitialWindow - DEFAULT_INITIAL_WINDOW;
    if (grant <= 0 || !this.open.has(stream)) return false;
    out.push(chunk.subarray(from, end));
    out.push(this.grant(stream, grant));
    return true;
  }

  /** Server-to-client bytes, watched only; pass them on unchanged. */
  fromServer(chunk: Buffer): void {
    this.outbound.read(chunk, (type, flags, stream) => {
      if (stream === 0) return;
      const ended = type === TYPE_RST_STREAM || ((type === TYPE_DATA || type === TYPE_HEADERS) && (flags & FLAG_END_STREAM) !== 0);
      if (ended) this.open.delete(stream);
    });
  }

  /** How many streams are believed open; for tests. */
  get openStreams(): number {
    return this.open.size;
  }

  /** A complete SETTINGS frame without its INITIAL_WINDOW_SIZE entries, then the grants they imply. */
  private rewriteSettings(frame: Buffer): Buffer[] {
    const payload = frame.subarray(FRAME_HEADER_BYTES);
    if (payload.length % SETTING_BYTES !== 0) return [frame]; // malformed: let the server refuse it
    const kept: Buffer[] = [];
    let next = this.clientInitialWindow;
    for (let p = 0; p < payload.length; p += SETTING_BYTES) {
      const entry = payload.subarray(p, p + SETTING_BYTES);
      if (entry.readUInt16BE(0) === SETTING_INITIAL_WINDOW_SIZE) next = entry.readUInt32BE(2);
      else kept.push(entry);
    }
    if (kept.length * SETTING_BYTES === payload.length) return [frame];
    if (next > MAX_WINDOW) return [frame]; // a FLOW_CONTROL_ERROR the server should report itself
    this.stats.settingsRewritten++;
    const body = Buffer.concat(kept);
    const head = Buffer.from(frame.subarray(0, FRAME_HEADER_BYTES));
    head.writeUIntBE(body.length, 0, 3);
    const out: Buffer[] = [head, body];
    const delta = next - this.clientInitialWindow;
    this.clientInitialWindow = next;
    if (delta > 0) {
      for (const stream of this.open) {
        // A stream whose opening header block is still arriving gets the new size when it ends.
        if (stream !== this.opening) out.push(this.grant(stream, delta));
      }
    }
    return out;
  }

  private grant(stream: number, increment: number): Buffer {
    this.stats.windowUpdatesAdded++;
    return windowUpdateFrame(stream, increment);
  }
}
