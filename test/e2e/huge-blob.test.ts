/**
 * A blob larger than any buffer Bun can allocate (4 GiB) goes through a real
 * `lre serve` by ByteStream Write and comes back by Read, byte-exact, while the
 * server's peak memory stays a small fraction of the blob: the proof that
 * neither path ever holds a large blob whole (issue: storage plane, "a 4 GiB
 * blob streams through with flat memory"; reliability-targets H-4).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import type { Digest } from "../../src/digest/digest";
import { createHasher } from "../../src/digest/hasher";
import { streamRead, streamWrite, vmHwmMiB } from "../support/bytestream-streams";
import { createClients, type ReapiClients } from "../support/grpc-client";
import { startLre, type LreServer } from "../support/lre-server";

const MiB = 1024 * 1024;
/** One MiB past Bun's 4 GiB cap on a single Buffer. */
const SIZE = 4096 * MiB + MiB;
const CHUNK = MiB;
/** Far below the blob's size: streaming costs buffers, not the blob. */
const MAX_SERVER_PEAK_MIB = 400;

const pool = crypto.getRandomValues(new Uint8Array(CHUNK));

/** The blob, chunk by chunk, each stamped with its index so no two are alike; never held whole. */
function* chunks(): Generator<Uint8Array> {
  for (let i = 0, at = 0; at < SIZE; i++, at += CHUNK) {
    const c = pool.slice(0, Math.min(CHUNK, SIZE - at));
    new DataView(c.buffer).setFloat64(0, i);
    yield c;
  }
}

let server: LreServer;
let client: ReapiClients;
let digest: Digest;

beforeAll(async () => {
  server = await startLre({ args: ["--no-exec", "--max-cache-size", "6GiB"] });
  client = createClients(server.socketPath);
  const h = createHasher("sha256");
  for (const c of chunks()) h.update(c);
  digest = { fn: "sha256", hash: h.hex(), sizeBytes: SIZE };
});

afterAll(async () => {
  client?.close();
  await server?.dispose();
});

test("a blob over 4 GiB is written and read back over the Unix socket with the server's memory flat", async () => {
  await streamWrite(client, digest, chunks(), 15 * 60_000);
  // Stored as a file beside LMDB, at its full size.
  const stored = join(server.dataDir, "cas", digest.hash.slice(0, 2), `sha256-${digest.hash}`);
  expect(statSync(stored).size).toBe(SIZE);
  expect((await client.findMissingBlobs({ blobDigests: [{ hash: digest.hash, sizeBytes: SIZE }] })).missingBlobDigests).toEqual([]);

  const back = createHasher("sha256");
  let largestMessage = 0;
  const read = await streamRead(client, digest, 15 * 60_000, (c) => {
    back.update(c);
    largestMessage = Math.max(largestMessage, c.byteLength);
  });
  expect(read.seconds).toBeNumber();
  expect(read.bytes).toBe(SIZE);
  expect(back.hex()).toBe(digest.hash);
  // Chunked well under the 4 MiB default message limit of gRPC clients.
  expect(largestMessage).toBeLessThanOrEqual(CHUNK);
  expect(vmHwmMiB(server.pid)).toBeLessThan(MAX_SERVER_PEAK_MIB);
}, 30 * 60_000);
