import { randomUUID } from "node:crypto";
import type { Digest } from "../../src/digest/digest";
import { toWire } from "../../src/digest/digest";
import { createHasher, digestOf } from "../../src/digest/hasher";
import { BatchUpdateBlobsRequest, UpdateActionResultRequest } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { ReadRequest, WriteRequest } from "../../src/proto/google/bytestream/bytestream";
import { grpc, type ReapiClients } from "../support/grpc-client";
import type { Oracle } from "./oracle";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Small seeded PRNG (mulberry32) so a failing run's choices can be replayed from its seed. */
export function rng(seed: number): { next(): number; int(n: number): number; between(lo: number, hi: number): number } {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n), between: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)) };
}

export type Rng = ReturnType<typeof rng>;

/**
 * Blob contents: a unique 16-byte header followed by a window of a shared
 * random pool, so blobs are distinct without generating megabytes of fresh
 * randomness per upload.
 */
const POOL = crypto.getRandomValues(new Uint8Array(32 * MiB)).slice();
let counter = 0;

export function makeBlob(size: number): { digest: Digest; data: Uint8Array } {
  const data = new Uint8Array(size);
  const header = new Uint8Array(16);
  crypto.getRandomValues(header);
  new DataView(header.buffer).setUint32(0, counter++);
  data.set(header.subarray(0, Math.min(16, size)));
  if (size > 16) {
    const start = (counter * 7919) % (POOL.byteLength - (size - 16) + 1);
    data.set(POOL.subarray(start, start + size - 16), 16);
  }
  return { digest: digestOf("sha256", data), data };
}

/**
 * Sizes from 0 B to 24 MiB, weighted towards what builds upload, and hitting
 * both sides of the 1 MiB inline/file threshold.
 */
export function pickSize(r: Rng): number {
  const x = r.next();
  if (x < 0.05) return 0;
  if (x < 0.25) return r.between(1, 200);
  if (x < 0.45) return r.between(1 * KiB, 64 * KiB);
  if (x < 0.6) return r.between(256 * KiB, MiB);
  if (x < 0.65) return MiB;
  if (x < 0.7) return MiB + 1;
  if (x < 0.97) return r.between(MiB + 2, 6 * MiB);
  return r.between(12 * MiB, 24 * MiB);
}

const DEADLINE_MS = 30_000;
const deadline = (ms = DEADLINE_MS): grpc.CallOptions => ({ deadline: Date.now() + ms });

/** ByteStream Write in 64 KiB pieces, as Bazel sends them; resolves only on an OK with the full committed_size. */
export function byteStreamWrite(c: ReapiClients, d: Digest, data: Uint8Array, ms = DEADLINE_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = c.bytestream.write(new grpc.Metadata(), deadline(ms), (err, res) => {
      if (err !== null) reject(err);
      else if (res.committedSize !== d.sizeBytes) reject(new Error(`Write of ${d.hash}/${d.sizeBytes} committed ${res.committedSize}`));
      else resolve();
    });
    const name = `uploads/${randomUUID()}/blobs/${d.hash}/${d.sizeBytes}`;
    let at = 0;
    do {
      const end = Math.min(at + 64 * KiB, data.byteLength);
      call.write(
        WriteRequest.fromPartial({
          resourceName: at === 0 ? name : "",
          writeOffset: at,
          data: Buffer.from(data.buffer, data.byteOffset + at, end - at),
          finishWrite: end === data.byteLength,
        }),
      );
      at = end;
    } while (at < data.byteLength);
    call.end();
  });
}

/** BatchUpdateBlobs; resolves with the digests the server answered OK for. */
export function batchUpdate(c: ReapiClients, blobs: readonly { digest: Digest; data: Uint8Array }[]): Promise<Digest[]> {
  const req = BatchUpdateBlobsRequest.fromPartial({
    requests: blobs.map((b) => ({ digest: toWire(b.digest), data: Buffer.from(b.data) })),
  });
  return new Promise((resolve, reject) => {
    c.cas.batchUpdateBlobs(req, new grpc.Metadata(), deadline(), (err, res) => {
      if (err !== null) return reject(err);
      const ok: Digest[] = [];
      res.responses.forEach((r, i) => {
        const b = blobs[i];
        if (b !== undefined && r.status?.code === 0 && r.digest?.hash === b.digest.hash) ok.push(b.digest);
      });
      resolve(ok);
    });
  });
}

/** UpdateActionResult naming `outputs` as output files and the first of them as stdout. */
export function updateAction(c: ReapiClients, action: Digest, outputs: readonly Digest[]): Promise<void> {
  const req = UpdateActionResultRequest.fromPartial({
    actionDigest: toWire(action),
    actionResult: {
      exitCode: 0,
      outputFiles: outputs.map((d, i) => ({ path: `out/f${i}`, digest: toWire(d) })),
      ...(outputs[0] === undefined ? {} : { stdoutDigest: toWire(outputs[0]) }),
    },
  });
  return new Promise((resolve, reject) => {
    c.ac.updateActionResult(req, new grpc.Metadata(), deadline(), (err) => (err !== null ? reject(err) : resolve()));
  });
}

/**
 * Streams a blob back with ByteStream Read under a deadline (a stalled read
 * must fail the check, not hang the test) and returns its size and hash.
 */
export function readBack(c: ReapiClients, d: Digest, ms = DEADLINE_MS): Promise<{ size: number; hash: string }> {
  return new Promise((resolve, reject) => {
    const h = createHasher("sha256");
    let size = 0;
    const stream = c.bytestream.read(ReadRequest.fromPartial({ resourceName: `blobs/${d.hash}/${d.sizeBytes}` }), new grpc.Metadata(), deadline(ms));
    stream.on("data", (m: { data: Uint8Array }) => {
      h.update(m.data);
      size += m.data.byteLength;
    });
    stream.on("error", reject);
    stream.on("end", () => resolve({ size, hash: h.hex() }));
  });
}

/**
 * One client's loop until `stop()` says so: uploads over ByteStream and
 * BatchUpdateBlobs, and action results pointing at blobs already acked.
 * Failures go to `onError`; the loop carries on until stopped.
 */
export async function worker(
  c: ReapiClients,
  oracle: Oracle,
  r: Rng,
  stopped: () => boolean,
  onError: (err: unknown) => void,
): Promise<void> {
  while (!stopped()) {
    const kind = r.next();
    try {
      if (kind < 0.6) {
        const b = makeBlob(pickSize(r));
        oracle.attempt(b.digest);
        await byteStreamWrite(c, b.digest, b.data);
        oracle.ack(b.digest, "bytestream");
      } else if (kind < 0.85) {
        const n = r.between(1, 40);
        const blobs = Array.from({ length: n }, () => makeBlob(r.next() < 0.8 ? r.between(0, 4 * KiB) : r.between(4 * KiB, 64 * KiB)));
        for (const b of blobs) oracle.attempt(b.digest);
        for (const d of await batchUpdate(c, blobs)) oracle.ack(d, "batch");
      } else {
        const outputs: Digest[] = [];
        for (let i = r.between(1, 4); i > 0; i--) {
          const d = oracle.someAcked(r.int);
          if (d !== undefined) outputs.push(d);
        }
        const action = makeBlob(r.between(20, 200)).digest;
        oracle.attemptAction(action);
        await updateAction(c, action, outputs);
        oracle.ackAction({ action, blobs: outputs, outputPaths: outputs.map((_, i) => `out/f${i}`) });
      }
    } catch (err) {
      if (stopped()) return;
      // The caller decides: after the kill this is expected, before it a bug.
      onError(err);
      await Bun.sleep(20);
    }
  }
}
