/**
 * ByteStream Read of large blobs when the client raises its HTTP/2 initial
 * window while the download runs, as grpc-go's BDP estimator does.
 *
 * RFC 9113 §6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE changes the window of
 * every open stream by the difference. grpc-go counts on that: after raising
 * the size it sends a stream WINDOW_UPDATE only once a quarter of the new size
 * is read. Bun's HTTP/2 server did not add the difference, so it ran out of
 * window while the client waited for data it had allowed; such Reads stopped
 * for good after one to a few MiB (remotetool gave up after 20 s and retried).
 * The client here follows grpc-go's rule exactly and sends nothing else.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { ReadRequest, ReadResponse } from "../../src/proto/google/bytestream/bytestream";
import { type TestBlob, type TestServer, TRANSPORTS, blob, bytes, startTestServer } from "./harness";
import {
  FLAG,
  FRAME,
  MAX_WINDOW,
  RawHttp2Connection,
  SETTING_INITIAL_WINDOW_SIZE,
  grpcMessages,
  grpcRequestData,
  grpcRequestHeaders,
  settingsFrame,
  windowUpdate,
} from "./raw-http2";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Far above what a healthy read of 64 MiB needs; a stalled one never finishes. */
const STALL_MS = 10_000;
const READ_PATH = "/google.bytestream.ByteStream/Read";
const DEFAULT_WINDOW = 65_535;

type Raise = "step by step while data arrives" | "once, before the request";

/**
 * Reads `b` on each of `streams` over one fresh connection. Stream windows
 * follow grpc-go: a WINDOW_UPDATE once a quarter of the current initial window
 * was received. With "step by step", the initial window doubles from 128 KiB
 * to 16 MiB after each MiB received, as BDP estimation does on a fast link.
 */
async function readAll(address: string, b: TestBlob, streams: readonly number[], raise: Raise): Promise<Map<number, Buffer>> {
  let window = raise === "once, before the request" ? 16 * MiB : DEFAULT_WINDOW;
  const conn = await RawHttp2Connection.open(address, window === DEFAULT_WINDOW ? [] : [[SETTING_INITIAL_WINDOW_SIZE, window]]);
  try {
    const bodies = new Map<number, Buffer[]>(streams.map((s) => [s, []]));
    const unacked = new Map<number, number>(streams.map((s) => [s, 0]));
    let received = 0;
    let nextRaiseAt = 1 * MiB;
    const open = new Set(streams);
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Read stalled after ${received} bytes; streams ${[...open].join(", ")} unfinished`)), STALL_MS);
      conn.onFrame((f) => {
        if (!open.has(f.stream)) return;
        if (f.type === FRAME.RST_STREAM) reject(new Error(`server reset stream ${f.stream}`));
        if (f.type === FRAME.DATA) {
          bodies.get(f.stream)?.push(f.payload);
          received += f.payload.length;
          const owed = (unacked.get(f.stream) ?? 0) + f.payload.length;
          if (owed >= window / 4) {
            conn.send(windowUpdate(f.stream, owed));
            unacked.set(f.stream, 0);
          } else {
            unacked.set(f.stream, owed);
          }
          if (raise === "step by step while data arrives" && received >= nextRaiseAt && window < 16 * MiB) {
            nextRaiseAt += 1 * MiB;
            window = Math.max(128 * KiB, window * 2);
            conn.send(settingsFrame([[SETTING_INITIAL_WINDOW_SIZE, window]]));
          }
        }
        if ((f.flags & FLAG.END_STREAM) !== 0) {
          open.delete(f.stream);
          if (open.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        }
      });
    });
    // The connection window is not part of this; grpc-go keeps it ahead too.
    conn.send(windowUpdate(0, MAX_WINDOW - DEFAULT_WINDOW));
    const request = ReadRequest.encode(ReadRequest.fromPartial({ resourceName: `blobs/${b.digest.hash}/${b.digest.sizeBytes}` })).finish();
    for (const s of streams) conn.send(Buffer.concat([grpcRequestHeaders(s, READ_PATH), grpcRequestData(s, request)]));
    await done;
    const out = new Map<number, Buffer>();
    for (const [s, parts] of bodies) {
      out.set(s, Buffer.concat(grpcMessages(Buffer.concat(parts)).map((m) => Buffer.from(ReadResponse.decode(m).data))));
    }
    return out;
  } finally {
    conn.close();
  }
}

for (const transport of TRANSPORTS) {
  describe(`ByteStream Read under a client-raised initial window (${transport})`, () => {
    let t: TestServer;
    const blobs = new Map<number, TestBlob>();

    beforeAll(async () => {
      t = await startTestServer({ transport });
      for (const size of [2 * MiB, 4 * MiB, 8 * MiB, 64 * MiB]) {
        const b = blob(bytes(size, size));
        await t.cas.put(b.digest, b.data);
        blobs.set(size, b);
      }
    });
    afterAll(() => t.stop());

    for (const raise of ["step by step while data arrives", "once, before the request"] as const) {
      test(`2, 4 and 8 MiB blobs (each twice) and 64 MiB arrive whole, window raised ${raise}`, async () => {
        for (const size of [2 * MiB, 4 * MiB, 8 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 64 * MiB]) {
          const b = blobs.get(size) as TestBlob;
          const got = (await readAll(t.address, b, [1], raise)).get(1) as Buffer;
          expect(got.length).toBe(size);
          expect(got.equals(b.data)).toBe(true);
        }
      }, 30_000);
    }

    test("four concurrent Reads on one connection all finish while the window is raised", async () => {
      const b = blobs.get(8 * MiB) as TestBlob;
      const got = await readAll(t.address, b, [1, 3, 5, 7], "step by step while data arrives");
      for (const data of got.values()) expect(data.equals(b.data)).toBe(true);
    }, 30_000);
  });
}
