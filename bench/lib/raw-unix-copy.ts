/**
 * The raw Unix-socket baseline for streaming benches: the same bytes a gRPC
 * stream carries, sent to (or received from) a separate Bun process over a
 * plain socket, with backpressure and nothing else. A gRPC figure divided by
 * this one says how much of the socket's speed the protocol stack keeps.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";

export interface RawCopyPeer {
  /** Sends every chunk, then waits for the peer to confirm it got them all. Returns seconds. */
  send(total: number, chunks: Iterable<Uint8Array>): Promise<number>;
  /** Asks the peer for `total` bytes and returns the seconds until the last one arrived. */
  receive(total: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startRawCopyPeer(): Promise<RawCopyPeer> {
  const dir = mkdtempSync(join(tmpdir(), "lre-raw-"));
  const path = join(dir, "raw.sock");
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "unix-copy-peer.ts"), path], { stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  let banner = "";
  while (!banner.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`raw copy peer exited with ${await proc.exited} before listening`);
    banner += new TextDecoder().decode(value);
  }
  reader.releaseLock();

  const header = (mode: "w" | "r", total: number): Uint8Array => {
    const h = new Uint8Array(9);
    h[0] = mode === "r" ? 0x72 : 0x77;
    new DataView(h.buffer).setBigUint64(1, BigInt(total), true);
    return h;
  };

  /** One connection with a promise-based write that honours backpressure. */
  async function connect(onData: (n: number) => void): Promise<{ writeAll(b: Uint8Array): Promise<void>; end(): void }> {
    let drained: (() => void) | undefined;
    const socket: Socket<undefined> = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, chunk) => onData(chunk.byteLength),
        drain: () => {
          const d = drained;
          drained = undefined;
          d?.();
        },
      },
    });
    return {
      async writeAll(b) {
        let at = 0;
        while (at < b.byteLength) {
          const n = socket.write(b.subarray(at));
          if (n > 0) at += n;
          if (at < b.byteLength) await new Promise<void>((r) => (drained = r));
        }
      },
      end: () => socket.end(),
    };
  }

  return {
    async send(total, chunks) {
      let acked: () => void = () => {};
      const done = new Promise<void>((r) => (acked = r));
      const start = Bun.nanoseconds();
      const conn = await connect(() => acked());
      await conn.writeAll(header("w", total));
      for (const c of chunks) await conn.writeAll(c);
      await done;
      const secs = (Bun.nanoseconds() - start) / 1e9;
      conn.end();
      return secs;
    },
    async receive(total) {
      let got = 0;
      let finished: () => void = () => {};
      const done = new Promise<void>((r) => (finished = r));
      const start = Bun.nanoseconds();
      const conn = await connect((n) => {
        got += n;
        if (got >= total) finished();
      });
      await conn.writeAll(header("r", total));
      await done;
      const secs = (Bun.nanoseconds() - start) / 1e9;
      conn.end();
      return secs;
    },
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
