import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { ManualClock } from "../../src/clock";
import type { BlobStore } from "../../src/cas/blob-store";
import { LmdbBlobStore } from "../../src/cas/lmdb-blob-store";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { SizeBoundedBlobStore } from "../../src/cas/size-bounded-blob-store";
import type { Digest } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode } from "../../src/errors";
import { bytesOf, expectCode, runBlobStoreConformance } from "./blob-store.conformance";

const HOUR = 3600_000;
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

runBlobStoreConformance("SizeBoundedBlobStore over MemoryBlobStore", async ({ clock }) =>
  new SizeBoundedBlobStore(new MemoryBlobStore({ clock }), { maxBytes: 1 << 30, clock }),
);

function sized(size: number, seed: number): { digest: Digest; data: Uint8Array } {
  const data = bytesOf(size, seed);
  return { digest: digestOf("sha256", data), data };
}

async function storedBytes(store: BlobStore): Promise<number> {
  let n = 0;
  for await (const b of store.list()) n += b.digest.sizeBytes;
  return n;
}

async function present(store: BlobStore, ...blobs: { digest: Digest }[]): Promise<boolean[]> {
  const stored = new Set(await listHashes(store));
  return blobs.map((b) => stored.has(b.digest.hash));
}

async function listHashes(store: BlobStore): Promise<string[]> {
  const out: string[] = [];
  for await (const b of store.list()) out.push(b.digest.hash);
  return out;
}

function bounded(maxBytes: number, clock: ManualClock, protectMs = HOUR): SizeBoundedBlobStore {
  return new SizeBoundedBlobStore(new MemoryBlobStore({ clock }), { maxBytes, clock, protectMs, evictionSlack: 0 });
}

describe("SizeBoundedBlobStore", () => {
  test("stored plus in-flight bytes never exceed maxBytes, whatever the write pattern", async () => {
    const clock = new ManualClock();
    const store = bounded(10_000, clock, 1000);
    let inFlight = 0;
    for (let i = 0; i < 60; i++) {
      clock.advance(2000);
      const b = sized(500 + ((i * 977) % 2500), i);
      if (i % 3 === 0) {
        const w = await store.beginWrite(b.digest);
        inFlight = b.data.byteLength;
        expect((await storedBytes(store)) + inFlight).toBeLessThanOrEqual(10_000);
        await w.write(b.data);
        await w.commit();
        inFlight = 0;
      } else {
        await store.put(b.digest, b.data);
      }
      expect(await storedBytes(store)).toBeLessThanOrEqual(10_000);
      expect((await store.usage()).bytes).toBe(await storedBytes(store));
    }
  });

  test("evicts the least recently used blob; reads, FindMissing hits and touch count as use", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock, 1000);
    const [a, b, c, d, e, f] = [1, 2, 3, 4, 5, 6].map((s) => sized(30, s)) as [
      ReturnType<typeof sized>, ReturnType<typeof sized>, ReturnType<typeof sized>,
      ReturnType<typeof sized>, ReturnType<typeof sized>, ReturnType<typeof sized>,
    ];
    for (const x of [a, b, c]) {
      await store.put(x.digest, x.data);
      clock.advance(10_000);
    }
    await store.touch([a.digest]);
    clock.advance(10_000);
    await store.put(d.digest, d.data);
    expect(await present(store, a, b, c, d)).toEqual([true, false, true, true]);

    clock.advance(10_000);
    await store.get(c.digest);
    clock.advance(10_000);
    await store.put(e.digest, e.data);
    expect(await present(store, a, c, d, e)).toEqual([false, true, true, true]);

    clock.advance(10_000);
    await store.findMissing([d.digest]);
    clock.advance(10_000);
    await store.put(f.digest, f.data);
    expect(await present(store, c, d, e, f)).toEqual([false, true, true, true]);
  });

  test("a blob used within protectMs is never evicted; a write that would need it fails RESOURCE_EXHAUSTED", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock, 3 * HOUR);
    const [a, b, c] = [sized(40, 1), sized(40, 2), sized(40, 3)];
    await store.put(a.digest, a.data);
    clock.advance(2 * HOUR);
    await store.put(b.digest, b.data);
    clock.advance(HOUR - 1);
    await store.findMissing([]);
    await expectCode(store.put(c.digest, c.data), GrpcCode.RESOURCE_EXHAUSTED);
    expect(await present(store, a, b)).toEqual([true, true]);
    clock.advance(1);
    await store.put(c.digest, c.data);
    expect(await present(store, a, b, c)).toEqual([false, true, true]);
  });

  test("re-uploading a stored blob needs no room: it succeeds when every blob is protected, and counts as a use", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock, 3 * HOUR);
    const [a, b, c] = [sized(50, 1), sized(50, 2), sized(50, 3)];
    await store.put(a.digest, a.data);
    clock.advance(HOUR);
    await store.put(b.digest, b.data);
    clock.advance(HOUR);
    await expectCode(store.put(c.digest, c.data), GrpcCode.RESOURCE_EXHAUSTED);

    await store.put(a.digest, a.data);
    const w = await store.beginWrite(a.digest);
    await w.write(a.data);
    await w.commit();
    expect(await store.usage()).toEqual({ blobs: 2, bytes: 100 });

    // a was used last, so once both age out of the window b goes first.
    clock.advance(3 * HOUR + 1);
    await store.put(c.digest, c.data);
    expect(await present(store, a, b, c)).toEqual([true, false, true]);
  });

  test("re-uploading a stored blob with the wrong length is still INVALID_ARGUMENT", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock);
    const a = sized(50, 1);
    await store.put(a.digest, a.data);
    await expectCode(store.put(a.digest, a.data.subarray(1)), GrpcCode.INVALID_ARGUMENT);
    const w = await store.beginWrite(a.digest);
    await w.write(a.data.subarray(1));
    await expectCode(w.commit(), GrpcCode.INVALID_ARGUMENT);
    expect(await store.usage()).toEqual({ blobs: 1, bytes: 50 });
  });

  test("an upload that began while its blob was stored needs room at commit if the blob was evicted meanwhile", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock, HOUR);
    const [a, b, c] = [sized(50, 1), sized(50, 2), sized(50, 3)];
    await store.put(a.digest, a.data);
    const w = await store.beginWrite(a.digest);
    await w.write(a.data);
    clock.advance(2 * HOUR);
    await store.evictTo(0);
    await store.put(b.digest, b.data);
    await w.commit();
    expect(await present(store, a, b)).toEqual([true, true]);
    expect(await store.usage()).toEqual({ blobs: 2, bytes: 100 });

    const late = await store.beginWrite(a.digest);
    await late.write(a.data);
    clock.advance(2 * HOUR);
    await store.evictTo(0);
    await store.put(b.digest, b.data);
    await store.put(c.digest, c.data);
    await expectCode(late.commit(), GrpcCode.RESOURCE_EXHAUSTED);
    expect(await present(store, a, b, c)).toEqual([false, true, true]);
    expect(await store.usage()).toEqual({ blobs: 2, bytes: 100 });
  });

  test("a blob larger than maxBytes is RESOURCE_EXHAUSTED at once", async () => {
    const store = bounded(100, new ManualClock());
    const big = sized(101, 1);
    await expectCode(store.beginWrite(big.digest), GrpcCode.RESOURCE_EXHAUSTED);
  });

  test("aborted and failed uploads give their reservation back", async () => {
    const clock = new ManualClock();
    const store = bounded(100, clock);
    const a = sized(60, 1);
    const w = await store.beginWrite(a.digest);
    await w.write(a.data.subarray(0, 10));
    await w.abort();
    const bad = await store.beginWrite(a.digest);
    await bad.write(a.data.subarray(1));
    await expectCode(bad.commit(), GrpcCode.INVALID_ARGUMENT);
    await store.put(a.digest, a.data);
    expect((await store.usage()).bytes).toBe(60);
  });

  test("evictTo frees unprotected blobs oldest first and reports what it did", async () => {
    const clock = new ManualClock();
    const store = bounded(1000, clock, HOUR);
    const blobs = [1, 2, 3, 4].map((s) => sized(100, s));
    for (const b of blobs) {
      await store.put(b.digest, b.data);
      clock.advance(HOUR);
    }
    const r = await store.evictTo(150);
    expect(r).toEqual({ evictedBlobs: 3, evictedBytes: 300, bytesAfter: 100 });
    expect(await present(store, ...blobs)).toEqual([false, false, false, true]);
  });

  test("recency survives a restart of the LMDB store below", async () => {
    const dataDir = await mkdtemp(`${tmpdir()}/lre-bounded-`);
    dirs.push(dataDir);
    const clock = new ManualClock();
    const [a, b, c] = [sized(40, 1), sized(40, 2), sized(40, 3)];
    const first = await LmdbBlobStore.open({ dataDir, clock, inlineMaxBytes: 16 });
    await first.put(a.digest, a.data);
    clock.advance(10_000);
    await first.put(b.digest, b.data);
    clock.advance(10_000);
    await first.touch([a.digest]);
    await first.close();

    clock.advance(10_000);
    const store = new SizeBoundedBlobStore(await LmdbBlobStore.open({ dataDir, clock }), {
      maxBytes: 100,
      clock,
      protectMs: 1000,
      evictionSlack: 0,
    });
    expect(await store.usage()).toEqual({ blobs: 2, bytes: 80 });
    await store.put(c.digest, c.data);
    expect(await present(store, a, b, c)).toEqual([true, false, true]);
    await store.close();
  });
});
