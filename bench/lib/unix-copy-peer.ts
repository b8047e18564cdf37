/**
 * The far end of the raw Unix-socket baseline: a separate process (as `lre
 * serve` is) that either swallows N bytes and answers one byte, or sends N
 * bytes. Protocol per connection: 1 mode byte ("w" = client sends, "r" =
 * client receives), then N as a little-endian u64, then the payload.
 *
 * Usage: bun unix-copy-peer.ts <socket path>; prints "ready" once listening.
 */
const path = process.argv[2];
if (path === undefined) {
  console.error("usage: unix-copy-peer.ts <socket path>");
  process.exit(2);
}

const POOL = new Uint8Array(1024 * 1024).map((_, i) => (i * 131) & 0xff);

interface Conn {
  header: Uint8Array;
  headerLen: number;
  mode: "w" | "r" | undefined;
  want: number;
  got: number;
  /** Bytes still to send in "r" mode. */
  left: number;
  /** Unsent tail of the last write, resent on drain. */
  pending: Uint8Array | undefined;
}

function pump(socket: { write(b: Uint8Array): number; end(): void }, c: Conn): void {
  for (;;) {
    if (c.pending !== undefined) {
      const n = socket.write(c.pending);
      if (n < c.pending.byteLength) {
        c.pending = c.pending.subarray(Math.max(0, n));
        return;
      }
      c.pending = undefined;
    }
    if (c.left === 0) return;
    const take = Math.min(c.left, POOL.byteLength);
    c.left -= take;
    c.pending = POOL.subarray(0, take);
  }
}

Bun.listen<Conn>({
  unix: path,
  socket: {
    open(socket) {
      socket.data = { header: new Uint8Array(9), headerLen: 0, mode: undefined, want: 0, got: 0, left: 0, pending: undefined };
    },
    data(socket, chunk) {
      const c = socket.data;
      let body = chunk;
      if (c.mode === undefined) {
        const take = Math.min(9 - c.headerLen, chunk.byteLength);
        c.header.set(chunk.subarray(0, take), c.headerLen);
        c.headerLen += take;
        body = chunk.subarray(take);
        if (c.headerLen < 9) return;
        c.mode = c.header[0] === 0x72 ? "r" : "w";
        c.want = Number(new DataView(c.header.buffer).getBigUint64(1, true));
        if (c.mode === "r") {
          c.left = c.want;
          pump(socket, c);
          return;
        }
      }
      c.got += body.byteLength;
      if (c.mode === "w" && c.got >= c.want) socket.write(new Uint8Array([0x6b]));
    },
    drain(socket) {
      pump(socket, socket.data);
    },
  },
});
console.log("ready");
