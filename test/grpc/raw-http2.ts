/**
 * A hand-driven HTTP/2 client for flow-control tests: it sends exactly the
 * frames a test asks for and nothing else (no automatic WINDOW_UPDATEs), so a
 * test can act like grpc-go's BDP estimator, which raises
 * SETTINGS_INITIAL_WINDOW_SIZE while a download runs and then waits.
 */
import * as net from "node:net";

export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const SETTING_INITIAL_WINDOW_SIZE = 0x4;
export const MAX_WINDOW = 2 ** 31 - 1;
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

export function settingsFrame(entries: readonly [id: number, value: number][], flags = 0): Buffer {
  const body = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], k) => {
    body.writeUInt16BE(id, k * 6);
    body.writeUInt32BE(value, k * 6 + 2);
  });
  return frame(FRAME.SETTINGS, flags, 0, body);
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const body = Buffer.alloc(4);
  body.writeUInt32BE(increment);
  return frame(FRAME.WINDOW_UPDATE, 0, stream, body);
}

/** An HPACK block of plain literals without indexing (RFC 7541 §6.2.2); names and values under 127 bytes. */
export function literalHeaders(headers: readonly [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    if (n.length > 126 || v.length > 126) throw new RangeError("header too long for this simple encoder");
    parts.push(Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v);
  }
  return Buffer.concat(parts);
}

/** The HEADERS frame of a gRPC call to `path` on `stream`. */
export function grpcRequestHeaders(stream: number, path: string): Buffer {
  const block = literalHeaders([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", "localhost"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ]);
  return frame(FRAME.HEADERS, FLAG.END_HEADERS, stream, block);
}

/** One length-prefixed gRPC message in a DATA frame that ends the client's side of the stream. */
export function grpcRequestData(stream: number, message: Uint8Array): Buffer {
  const body = Buffer.alloc(5 + message.length);
  body.writeUInt32BE(message.length, 1);
  body.set(message, 5);
  return frame(FRAME.DATA, FLAG.END_STREAM, stream, body);
}

/** Splits a gRPC response body into its messages. */
export function grpcMessages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let p = 0; p + 5 <= body.length; ) {
    const length = body.readUInt32BE(p + 1);
    out.push(body.subarray(p + 5, p + 5 + length));
    p += 5 + length;
  }
  return out;
}

/** A connection that sends only what it is told to, and reports every frame it receives. */
export class RawHttp2Connection {
  private pending = Buffer.alloc(0);
  private readonly listeners = new Set<(f: Frame) => void>();
  private closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      while (this.pending.length >= 9) {
        const length = this.pending.readUIntBE(0, 3);
        if (this.pending.length < 9 + length) break;
        const f: Frame = {
          type: this.pending[3] as number,
          flags: this.pending[4] as number,
          stream: this.pending.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.pending.subarray(9, 9 + length)),
        };
        this.pending = this.pending.subarray(9 + length);
        // Acknowledge the server's SETTINGS as every client must; nothing else is automatic.
        if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) this.send(settingsFrame([], FLAG.ACK));
        for (const l of this.listeners) l(f);
      }
    });
    socket.on("close", () => {
      this.closed = true;
    });
    socket.on("error", () => undefined);
  }

  /** Connects to a socket path or `host:port`, and sends the preface and the given SETTINGS. */
  static async open(address: string, initialSettings: readonly [number, number][] = []): Promise<RawHttp2Connection> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = address.startsWith("/")
        ? net.connect(address)
        : net.connect(Number(address.slice(address.lastIndexOf(":") + 1)), address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, ""));
      s.once("connect", () => resolve(s));
      s.once("error", reject);
    });
    const c = new RawHttp2Connection(socket);
    c.send(Buffer.concat([PREFACE, settingsFrame(initialSettings)]));
    return c;
  }

  send(bytes: Buffer): void {
    if (!this.closed) this.socket.write(bytes);
  }

  onFrame(listener: (f: Frame) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.socket.destroy();
  }
}
