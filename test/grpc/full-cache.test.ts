import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "../../src/clock";
import { formatWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode } from "../../src/errors";
import { type Storage, openStorage } from "../../src/storage/open-storage";
import { type TestServer, blob, bytes, startTestServer } from "./harness";

// The production stack with a cache of 4000 bytes, filled by blobs used within
// the protection window: nothing may be evicted, yet clients that upload a
// blob the cache already holds (Bazel does, after a FindMissing race or a
// retry) must succeed.
describe("a cache full of protected blobs", () => {
  const clock = new ManualClock();
  const file = blob(bytes(1500, 1));
  const otherFile = blob(bytes(1500, 2));
  const inline = blob(bytes(1000, 3));
  const newcomer = blob(bytes(100, 4));
  let dataDir: string;
  let storage: Storage;
  let s: TestServer;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "lre-grpc-full-"));
    // 1024-byte inline threshold: the 1500-byte blobs are files, the 1000-byte one lives in LMDB.
    storage = await openStorage({ dataDir, maxBytes: 4000, inlineMaxBytes: 1024, clock });
    for (const b of [file, otherFile, inline]) await storage.cas.put(b.digest, b.data);
    s = await startTestServer({ cas: storage.cas, ac: storage.ac });
  });
  afterAll(async () => {
    await s.stop();
    await storage.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("a new blob does not fit: RESOURCE_EXHAUSTED", async () => {
    const r = await s.clients.batchUpdateBlobs({ requests: [{ digest: newcomer.wire, data: newcomer.data }] });
    expect(r.responses[0]?.status?.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
  });

  test("BatchUpdateBlobs of blobs already stored is OK and stores nothing more", async () => {
    const r = await s.clients.batchUpdateBlobs({
      requests: [file, inline].map((b) => ({ digest: b.wire, data: b.data })),
    });
    expect(r.responses.map((x) => x.status?.code)).toEqual([GrpcCode.OK, GrpcCode.OK]);
    expect(await storage.stats()).toMatchObject({ blobs: 3, bytes: 4000 });
  });

  test("ByteStream Write of blobs already stored is OK with committed_size the full size", async () => {
    for (const b of [otherFile, inline]) {
      const w = await s.clients.writeBlob(formatWriteResourceName("", crypto.randomUUID(), b.digest), b.data, { chunkBytes: 500 });
      expect(w.committedSize).toBe(b.digest.sizeBytes);
    }
    expect(await storage.stats()).toMatchObject({ blobs: 3, bytes: 4000 });
  });
});
