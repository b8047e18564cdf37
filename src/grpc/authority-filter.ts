/**
 * Makes the `:authority` a client sends over a Unix socket acceptable to Bun's
 * HTTP/2 server, by editing the client-to-server byte stream.
 *
 * Bazel (grpc-java on netty) dialing `unix:///run/lre.sock` sends
 * `///run/lre.sock` as `:authority`. Bun's server accepts an authority only
 * if it is non-empty and every byte is a letter, digit or one of
 * `-._~!$&'()*+,;=:[]%`; anything else resets the stream with PROTOCOL_ERROR
 * before grpc-js sees it, and no server option turns that off. lre ignores the
 * authority, so each offending byte is replaced with `_` in place.
 *
 * Why in place and byte for byte: HPACK keeps a table of earlier headers on
 * both ends, sized by the octets of each entry, and netty adds the authority
 * to it and refers back to it by index on every later request. Keeping the
 * length keeps both tables the same size, so nothing else in the stream, no
 * frame length and no later index, has to change. Only header blocks (HEADERS
 * and CONTINUATION frames) are looked at; everything else, DATA included,
 * passes through without a copy.
 *
 * Left alone, and so still rejected by Bun: a Huffman-coded value (decoding it
 * would need the Huffman table; netty only Huffman-codes strings of 512 bytes
 * or more, grpc-go and grpc-js send `localhost`), an empty value, and a name
 * given as an index into the dynamic table (encoders name `:authority` by its
 * static index).
 */

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const TYPE_HEADERS = 0x1;
const TYPE_CONTINUATION = 0x9;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** A header block this large is passed on untouched; the server refuses it anyway. */
const MAX_HELD_BYTES = 1024 * 1024;
/** `:authority` in the HPACK static table. */
const STATIC_AUTHORITY = 1;
const AUTHORITY_NAME = Buffer.from(":authority");
const REPLACEMENT = "_".charCodeAt(0);

const ALLOWED = new Uint8Array(256);
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%") {
  ALLOWED[c.charCodeAt(0)] = 1;
}

/**
 * One connection's client-to-server direction. Feed it every chunk in order;
 * it returns the bytes to pass on, which may lag behind while a header block
 * is incomplete (HTTP/2 allows no other frame in the middle of one).
 */
export class AuthorityFilter {
  private prefaceLeft = PREFACE_BYTES;
  private readonly head = Buffer.alloc(FRAME_HEADER_BYTES);
  private headFill = 0;
  /** Bytes of the current frame header that came in an earlier chunk and were neither passed on nor held. */
  private headCarried = 0;
  private payloadLeft = 0;
  private frameType = 0;
  private frameFlags = 0;
  /** Raw frames of the header block being held; undefined while passing bytes through. */
  private held: Buffer[] | undefined;
  private heldBytes = 0;
  /** Inside an oversized header block that is passed on untouched. */
  private passingBlock = false;
  /** How many header values were rewritten so far. */
  rewrites = 0;

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let i = 0;
    /** Start of this chunk's bytes not yet passed on or held. */
    let from = 0;
    /** Moves this chunk's bytes up to `end` to where they belong: held, or out. */
    const settle = (end: number) => {
      if (end > from) {
        if (this.held === undefined) out.push(chunk.subarray(from, end));
        else this.hold(chunk.subarray(from, end));
      }
      from = end;
    };

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
        if (this.payloadLeft === 0) {
          settle(i);
          this.frameDone(out);
        }
        continue;
      }

      // A frame header, possibly split across chunks.
      const headStart = i;
      const n = Math.min(FRAME_HEADER_BYTES - this.headFill, chunk.length - i);
      chunk.copy(this.head, this.headFill, i, i + n);
      this.headFill += n;
      i += n;
      if (this.headFill < FRAME_HEADER_BYTES) {
        // Where these bytes go is known once the frame type is.
        settle(headStart);
        this.headCarried = this.headFill;
        from = chunk.length;
        break;
      }
      this.headFill = 0;
      const carried = this.headCarried;
      this.headCarried = 0;
      this.frameType = this.head[3] as number;
      this.frameFlags = this.head[4] as number;
      this.payloadLeft = this.head.readUIntBE(0, 3);

      if (this.held === undefined) {
        if (this.frameType === TYPE_HEADERS && !this.passingBlock) {
          settle(headStart);
          this.held = [];
          this.hold(Buffer.from(this.head));
          from = i;
        } else if (carried > 0) {
          out.push(Buffer.from(this.head.subarray(0, carried)));
        }
      } else {
        if (carried > 0) this.hold(Buffer.from(this.head.subarray(0, carried)));
        if (this.frameType !== TYPE_CONTINUATION) {
          // A broken block: the server fails the connection; hand it what came, as it came.
          settle(i);
          out.push(...this.release());
        }
      }
      if (this.payloadLeft === 0) {
        settle(i);
        this.frameDone(out);
      }
    }

    settle(chunk.length);
    if (this.held !== undefined && this.heldBytes > MAX_HELD_BYTES) {
      out.push(...this.release());
      this.passingBlock = true;
    }
    return out;
  }

  /** The current frame is complete and settled. */
  private frameDone(out: Buffer[]): void {
    if ((this.frameFlags & FLAG_END_HEADERS) === 0) return;
    if (this.frameType !== TYPE_HEADERS && this.frameType !== TYPE_CONTINUATION) return;
    if (this.held === undefined) {
      this.passingBlock = false;
      return;
    }
    const raw = Buffer.concat(this.release());
    this.rewrites += rewriteBlock(raw);
    out.push(raw);
  }

  private hold(bytes: Buffer): void {
    (this.held as Buffer[]).push(bytes);
    this.heldBytes += bytes.length;
  }

  private release(): Buffer[] {
    const held = this.held ?? [];
    this.held = undefined;
    this.heldBytes = 0;
    return held;
  }
}

/**
 * Rewrites the unacceptable `:authority` values in one complete header block,
 * given as its raw frames (a HEADERS frame and its CONTINUATIONs). Returns how
 * many values it changed.
 */
export function rewriteBlock(raw: Buffer): number {
  // The block's fragments, without frame headers, padding or priority fields,
  // and where each one sits in `raw`.
  const pieces: { at: number; length: number }[] = [];
  let p = 0;
  while (p + FRAME_HEADER_BYTES <= raw.length) {
    const length = raw.readUIntBE(p, 3);
    const flags = raw[p + 4] as number;
    let start = p + FRAME_HEADER_BYTES;
    let end = start + length;
    if (end > raw.length) return 0;
    if (raw[p + 3] === TYPE_HEADERS) {
      let padding = 0;
      if (flags & FLAG_PADDED) {
        padding = raw[start] as number;
        start += 1;
      }
      if (flags & FLAG_PRIORITY) start += 5;
      end -= padding;
      if (start > end) return 0;
    }
    pieces.push({ at: start, length: end - start });
    p += FRAME_HEADER_BYTES + length;
  }
  const block = Buffer.concat(pieces.map((x) => raw.subarray(x.at, x.at + x.length)));
  const rawOffset = (offset: number): number => {
    for (const piece of pieces) {
      if (offset < piece.length) return piece.at + offset;
      offset -= piece.length;
    }
    throw new RangeError("offset past the end of the header block");
  };

  let changed = 0;
  for (const [start, end] of authorityValues(block)) {
    if (isAcceptable(block, start, end)) continue;
    for (let k = start; k < end; k++) {
      if (!ALLOWED[block[k] as number]) raw[rawOffset(k)] = REPLACEMENT;
    }
    changed++;
  }
  return changed;
}

function isAcceptable(b: Buffer, start: number, end: number): boolean {
  for (let k = start; k < end; k++) if (!ALLOWED[b[k] as number]) return false;
  return true;
}

/**
 * Byte ranges of the plain (not Huffman-coded) `:authority` values in an
 * HPACK header block (RFC 7541 §6). A block that does not parse yields what
 * was found before the damage; the server will reject it on its own.
 */
export function authorityValues(block: Buffer): [number, number][] {
  const found: [number, number][] = [];
  let p = 0;
  while (p < block.length) {
    const first = block[p] as number;
    if (first & 0x80) {
      // Indexed field: nothing literal here.
      const r = readInteger(block, p, 7);
      if (r === undefined) break;
      p = r.next;
      continue;
    }
    if ((first & 0xe0) === 0x20) {
      // Dynamic table size update.
      const r = readInteger(block, p, 5);
      if (r === undefined) break;
      p = r.next;
      continue;
    }
    // A literal field: with incremental indexing (01), or without / never indexed (000x).
    const nameIndex = readInteger(block, p, first & 0x40 ? 6 : 4);
    if (nameIndex === undefined) break;
    p = nameIndex.next;
    let isAuthority = nameIndex.value === STATIC_AUTHORITY;
    if (nameIndex.value === 0) {
      const name = readString(block, p);
      if (name === undefined) break;
      isAuthority = !name.huffman && block.subarray(name.start, name.end).equals(AUTHORITY_NAME);
      p = name.end;
    }
    const value = readString(block, p);
    if (value === undefined) break;
    if (isAuthority && !value.huffman) found.push([value.start, value.end]);
    p = value.end;
  }
  return found;
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1), or undefined if cut short or absurd. */
function readInteger(b: Buffer, at: number, prefixBits: number): { value: number; next: number } | undefined {
  const max = (1 << prefixBits) - 1;
  let value = (b[at] as number) & max;
  let p = at + 1;
  if (value < max) return { value, next: p };
  let shift = 0;
  for (;;) {
    if (p >= b.length || shift > 28) return undefined;
    const byte = b[p++] as number;
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if ((byte & 0x80) === 0) return { value, next: p };
  }
}

/** An HPACK string literal (RFC 7541 §5.2): where its octets are and whether they are Huffman-coded. */
function readString(b: Buffer, at: number): { huffman: boolean; start: number; end: number } | undefined {
  if (at >= b.length) return undefined;
  const huffman = ((b[at] as number) & 0x80) !== 0;
  const length = readInteger(b, at, 7);
  if (length === undefined) return undefined;
  const end = length.next + length.value;
  if (end > b.length) return undefined;
  return { huffman, start: length.next, end };
}
