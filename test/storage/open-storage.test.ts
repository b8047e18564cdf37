import { afterAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { LmdbBlobStore } from "../../src/cas/lmdb-blob-store";
import { ManualClock } from "../../src/clock";
import { emptyDigest } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode, isRpcError } from "../../src/errors";
import { ActionResult } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { openStorage } from "../../src/storage/open-storage";
import { bytesOf, runBlobStoreConformance } from "../cas/blob-store.conformance";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(`${tmpdir()}/lre-storage-`);
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

runBlobStoreConformance(
  "openStorage().cas (verifying -> empty -> size-bounded -> lmdb)",
  async ({ clock }) => (await openStorage({ dataDir: await tempDir(), maxBytes: 1 << 30, clock, inlineMaxBytes: 4096 })).cas,
  { verifiesHashes: true },
);

function blobOf(size: number, seed: number) {
  const data = bytesOf(size, seed);
  return { digest: digestOf("sha256", data), data };
}

describe("openStorage", () => {
  test("blobs, results and recency survive close and reopen", async () => {
    const dataDir = await tempDir();
    const clock = new ManualClock();
    const small = blobOf(100, 1);
    const big = blobOf(50_000, 2);
    const s1 = await openStorage({ dataDir, maxBytes: 1 << 20, clock, inlineMaxBytes: 1024 });
    await s1.cas.put(small.digest, small.data);
    await s1.cas.put(big.digest, big.data);
    clock.advance(5000);
    await s1.cas.touch([small.digest]);
    const result = ActionResult.fromPartial({ outputFiles: [{ path: "o", digest: { hash: big.digest.hash, sizeBytes: big.digest.sizeBytes } }] });
    await s1.ac.put("", small.digest, { result, origin: "sandbox" });
    await s1.close();

    const s2 = await openStorage({ dataDir, maxBytes: 1 << 20, clock, inlineMaxBytes: 1024 });
    const used = new Map<string, number>();
    for await (const b of s2.cas.list()) used.set(b.digest.hash, b.lastUsedMs);
    expect(used.get(small.digest.hash)).toBe(clock.nowMs());
    expect(used.get(big.digest.hash)).toBe(clock.nowMs() - 5000);
    expect(await s2.cas.get(small.digest)).toEqual(small.data);
    expect(await s2.cas.get(big.digest)).toEqual(big.data);
    expect((await s2.ac.get("", small.digest))?.origin).toBe("sandbox");
    await s2.close();
  });

  test("startup removes temp files of dead uploads and drops entries whose file is missing or short", async () => {
    const dataDir = await tempDir();
    const [a, b, c] = [blobOf(5000, 1), blobOf(5000, 2), blobOf(5000, 3)];
    const s1 = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024 });
    for (const x of [a, b, c]) await s1.put(x.digest, x.data);
    const aPath = s1.blobPath(a.digest);
    const bPath = s1.blobPath(b.digest);
    await s1.close();
    await unlink(aPath);
    await truncate(bPath, 4999);
    const ownStart = readFileSync(`/proc/${process.pid}/stat`, "latin1").split(") ")[1]!.split(" ")[19];
    await writeFile(`${dataDir}/tmp/999999999-deadbeef`, "half an upload");
    await writeFile(`${dataDir}/tmp/999999999.12345-deadbeef`, "half an upload, newer naming");
    await writeFile(`${dataDir}/tmp/${process.pid}.${ownStart}-mine`, "an upload of a live process");
    // The same pid but another start time: a crashed run whose pid this process happens to have.
    await writeFile(`${dataDir}/tmp/${process.pid}.${Number(ownStart) + 1}-earlier-run`, "an upload of a dead run");

    const s2 = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024 });
    expect(await s2.findMissing([a.digest, b.digest, c.digest])).toEqual([a.digest, b.digest]);
    expect(await readdir(`${dataDir}/tmp`)).toEqual([`${process.pid}.${ownStart}-mine`]);
    expect(await s2.get(c.digest)).toEqual(c.data);
    await s2.close();
  });

  test("startup adopts an unindexed file only if it re-hashes to its name", async () => {
    const dataDir = await tempDir();
    const [good, bad] = [blobOf(3000, 4), blobOf(3000, 5)];
    const s1 = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024 });
    const goodPath = s1.blobPath(good.digest);
    const badPath = s1.blobPath(bad.digest);
    await s1.close();
    for (const p of [goodPath, badPath]) await mkdir(p.slice(0, p.lastIndexOf("/")), { recursive: true });
    await writeFile(goodPath, good.data);
    await writeFile(badPath, good.data);

    const s2 = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024, orphanGraceMs: 0 });
    expect(await s2.findMissing([good.digest, bad.digest])).toEqual([bad.digest]);
    expect(await s2.get(good.digest)).toEqual(good.data);
    expect(await Bun.file(badPath).exists()).toBe(false);
    await s2.close();
  });

  test("a data directory that cannot be written is an error naming it", async () => {
    const parent = await tempDir();
    await writeFile(`${parent}/not-a-dir`, "");
    const dataDir = `${parent}/not-a-dir/data`;
    let caught: unknown;
    try {
      await openStorage({ dataDir, maxBytes: 1000 });
    } catch (err) {
      caught = err;
    }
    expect(isRpcError(caught, GrpcCode.FAILED_PRECONDITION)).toBe(true);
    expect((caught as Error).message).toContain(dataDir);
  });

  test("the empty blob is never missing", async () => {
    const s = await openStorage({ dataDir: await tempDir(), maxBytes: 1000 });
    expect(await s.cas.findMissing([emptyDigest("sha256"), emptyDigest("blake3")])).toEqual([]);
    await s.close();
  });

  test("stats and gc work from another process while this one has the store open", async () => {
    const dataDir = await tempDir();
    const clock = new ManualClock(Date.now() - 10 * 3600_000);
    const s = await openStorage({ dataDir, maxBytes: 1 << 20, clock, inlineMaxBytes: 1024 });
    const blobs = [blobOf(2000, 1), blobOf(3000, 2), blobOf(100, 3)];
    for (const b of blobs) await s.cas.put(b.digest, b.data);
    const r = ActionResult.fromPartial({ exitCode: 0 });
    await s.ac.put("", blobs[0]!.digest, { result: r, origin: "sandbox" });
    await s.ac.put("x", blobs[0]!.digest, { result: r, origin: "client" });
    s.recordAcLookup(true);
    s.recordAcLookup(false);
    s.recordAcLookup(false);
    const local = await s.stats();
    expect(local).toEqual({
      blobs: 3, bytes: 5100, maxBytes: 1 << 20, servedMaxBytes: null, protectMs: 3 * 3600_000, servedProtectMs: null, acEntries: 2, acFromSandbox: 1, acFromClients: 1, acHits: 1, acMisses: 2,
    });

    const script = `
      import { openStorage } from ${JSON.stringify(`${import.meta.dir}/../../src/storage/open-storage.ts`)};
      const s = await openStorage({ dataDir: ${JSON.stringify(dataDir)}, maxBytes: ${1 << 20} });
      const stats = await s.stats();
      const gc = await s.gc(1000);
      console.log(JSON.stringify({ stats, gc }));
      await s.close();
    `;
    const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(err).toBe("");
    expect(code).toBe(0);
    const other = JSON.parse(out) as { stats: unknown; gc: { evictedBlobs: number; bytesAfter: number } };
    expect(other.stats).toEqual(local);
    expect(other.gc.bytesAfter).toBeLessThanOrEqual(1000);
    expect(await s.cas.findMissing(blobs.map((b) => b.digest))).toHaveLength(other.gc.evictedBlobs);
    expect((await s.stats()).bytes).toBe(other.gc.bytesAfter);
    await s.close();
  });
  test("a serving process records its limit for other processes; others leave it alone", async () => {
    const dataDir = await tempDir();
    const before = await openStorage({ dataDir, maxBytes: 1000 });
    expect(await before.stats()).toMatchObject({ maxBytes: 1000, servedMaxBytes: null });
    await before.close();

    const server = await openStorage({ dataDir, maxBytes: 5 << 20, serving: true });
    const cli = await openStorage({ dataDir, maxBytes: 1000 });
    expect(await cli.stats()).toMatchObject({ maxBytes: 1000, servedMaxBytes: 5 << 20 });
    await cli.close();
    await server.close();

    // It outlives the server: the limit the store was last run with.
    const after = await openStorage({ dataDir, maxBytes: 2000 });
    expect(await after.stats()).toMatchObject({ maxBytes: 2000, servedMaxBytes: 5 << 20 });
    await after.close();
  });

  test("a serving process records its protection window; others evict with it unless given their own", async () => {
    const dataDir = await tempDir();
    const clock = new ManualClock();
    const blob = blobOf(100, 1);
    const server = await openStorage({ dataDir, maxBytes: 1 << 20, clock, protectMs: 60_000, serving: true });
    await server.cas.put(blob.digest, blob.data);
    await server.close();
    clock.advance(120_000);

    // 2 min after its last use: outside the server's 1 min window, inside the 3 h default.
    const explicit = await openStorage({ dataDir, maxBytes: 1 << 20, clock, protectMs: 3 * 3600_000 });
    expect(await explicit.stats()).toMatchObject({ protectMs: 3 * 3600_000, servedProtectMs: 60_000 });
    expect((await explicit.gc(0)).evictedBlobs).toBe(0);
    await explicit.close();

    const inherited = await openStorage({ dataDir, maxBytes: 1 << 20, clock });
    expect(await inherited.stats()).toMatchObject({ protectMs: 60_000, servedProtectMs: 60_000 });
    expect((await inherited.gc(0)).evictedBlobs).toBe(1);
    await inherited.close();

    // A server is not bound by its predecessor: without a window of its own it has (and records) the default.
    const next = await openStorage({ dataDir, maxBytes: 1 << 20, serving: true });
    expect(await next.stats()).toMatchObject({ protectMs: 3 * 3600_000, servedProtectMs: 3 * 3600_000 });
    await next.close();
  });
});
