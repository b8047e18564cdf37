import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { ManualClock } from "../../src/clock";
import type { BlobStore } from "../../src/cas/blob-store";
import { CHUNK_BYTES } from "../../src/cas/blob-store";
import type { Digest, DigestFn } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode, isRpcError } from "../../src/errors";

export interface ConformanceContext {
  clock: ManualClock;
  /**
   * Releases something the store depends on but does not own (an upstream
   * server, the rest of an opened Storage) after the store is closed; last
   * deferred runs first.
   */
  defer(release: () => Promise<void>): void;
}

export interface ConformanceOptions {
  /** The store rejects bytes whose hash differs from the digest (true for verifying stacks). */
  verifiesHashes?: boolean;
  /**
   * delete removes only this store's copy, and a copy kept elsewhere can bring
   * the blob back (a store fronting an upstream fetches it again on the next
   * findMissing), so "a deleted blob is missing" cannot apply; the suite
   * checks instead that a blob which comes back is byte for byte the same.
   */
  deletedBlobsMayReturn?: boolean;
}

export function blob(text: string, fn: DigestFn = "sha256"): { digest: Digest; data: Uint8Array } {
  const data = new TextEncoder().encode(text);
  return { digest: digestOf(fn, data), data };
}

export function bytesOf(size: number, seed = 1): Uint8Array {
  const data = new Uint8Array(size);
  let x = seed * 2654435761;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    data[i] = x >>> 24;
  }
  return data;
}

export async function collect(it: AsyncIterable<Uint8Array>): Promise<{ data: Uint8Array; chunks: number[] }> {
  const parts: Uint8Array[] = [];
  const chunks: number[] = [];
  for await (const c of it) {
    parts.push(c);
    chunks.push(c.byteLength);
  }
  return { data: Buffer.concat(parts), chunks };
}

export async function expectCode(p: Promise<unknown>, code: GrpcCode): Promise<Error> {
  try {
    await p;
  } catch (err) {
    if (!isRpcError(err, code)) throw new Error(`expected gRPC code ${GrpcCode[code]}, got ${String(err)}`);
    return err;
  }
  throw new Error(`expected gRPC code ${GrpcCode[code]}, but the call succeeded`);
}

/**
 * The behaviour every BlobStore shares. Each implementation and decorator
 * stack runs it; behaviour specific to one store is tested beside it.
 */
export function runBlobStoreConformance(
  name: string,
  makeStore: (ctx: ConformanceContext) => Promise<BlobStore>,
  options: ConformanceOptions = {},
): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let store: BlobStore;
    let clock: ManualClock;
    let deferred: (() => Promise<void>)[] = [];

    beforeEach(async () => {
      clock = new ManualClock();
      deferred = [];
      store = await makeStore({ clock, defer: (release) => void deferred.push(release) });
    });
    afterEach(async () => {
      try {
        await store.close();
      } finally {
        for (const release of deferred.reverse()) await release();
      }
    });

    test("a stored blob reads back byte for byte and is no longer missing", async () => {
      const a = blob("alpha");
      const b = blob("beta");
      expect(await store.findMissing([a.digest, b.digest])).toEqual([a.digest, b.digest]);
      await store.put(a.digest, a.data);
      expect(await store.get(a.digest)).toEqual(a.data);
      expect(await store.findMissing([a.digest, b.digest])).toEqual([b.digest]);
    });

    test("get and read of an absent blob are NOT_FOUND, read before yielding anything", async () => {
      const a = blob("absent");
      await expectCode(store.get(a.digest), GrpcCode.NOT_FOUND);
      await expectCode(store.read(a.digest), GrpcCode.NOT_FOUND);
    });

    test("the same bytes under SHA-256 and BLAKE3 are different blobs", async () => {
      const s = blob("same bytes", "sha256");
      const b = blob("same bytes", "blake3");
      await store.put(s.digest, s.data);
      expect(await store.findMissing([s.digest, b.digest])).toEqual([b.digest]);
      await store.put(b.digest, b.data);
      expect(await store.get(b.digest)).toEqual(b.data);
    });

    test("storing a blob twice is harmless", async () => {
      const a = blob("twice");
      await store.put(a.digest, a.data);
      await store.put(a.digest, a.data);
      await Promise.all([store.put(a.digest, a.data), store.put(a.digest, a.data)]);
      expect(await store.get(a.digest)).toEqual(a.data);
    });

    test("the empty blob can be stored and read", async () => {
      const e = blob("");
      await store.put(e.digest, e.data);
      expect(await store.get(e.digest)).toEqual(new Uint8Array(0));
      expect((await collect(await store.read(e.digest))).data.byteLength).toBe(0);
    });

    test("a put whose length differs from the digest is INVALID_ARGUMENT and stores nothing", async () => {
      const a = blob("sized");
      await expectCode(store.put({ ...a.digest, sizeBytes: a.data.byteLength + 1 }, a.data), GrpcCode.INVALID_ARGUMENT);
      await expectCode(store.put({ ...a.digest, sizeBytes: a.data.byteLength - 1 }, a.data), GrpcCode.INVALID_ARGUMENT);
      expect(await store.findMissing([a.digest])).toEqual([a.digest]);
    });

    if (options.verifiesHashes) {
      test("a put whose bytes hash differently is INVALID_ARGUMENT and stores nothing", async () => {
        const a = blob("claimed");
        const other = blob("actual");
        const claimed = { ...a.digest, sizeBytes: other.data.byteLength };
        await expectCode(store.put(claimed, other.data), GrpcCode.INVALID_ARGUMENT);
        expect(await store.findMissing([claimed])).toEqual([claimed]);
      });
    }

    test("reads stream in chunks of at most CHUNK_BYTES, from any offset", async () => {
      const data = bytesOf(2 * CHUNK_BYTES + 12345);
      const d = digestOf("sha256", data);
      await store.put(d, data);
      const whole = await collect(await store.read(d));
      expect(whole.data).toEqual(data);
      expect(Math.max(...whole.chunks)).toBeLessThanOrEqual(CHUNK_BYTES);
      const tail = await collect(await store.read(d, CHUNK_BYTES + 7));
      expect(tail.data).toEqual(data.subarray(CHUNK_BYTES + 7));
      expect((await collect(await store.read(d, data.byteLength))).data.byteLength).toBe(0);
      await expectCode(store.read(d, data.byteLength + 1), GrpcCode.INVALID_ARGUMENT);
      await expectCode(store.read(d, -1), GrpcCode.INVALID_ARGUMENT);
    });

    test("a streamed upload is invisible until commit and counts the bytes written", async () => {
      const data = bytesOf(3 * CHUNK_BYTES + 5, 7);
      const d = digestOf("sha256", data);
      const w = await store.beginWrite(d);
      expect(w.bytesWritten).toBe(0);
      for (let at = 0; at < data.byteLength; at += 700_000) {
        await w.write(data.subarray(at, Math.min(at + 700_000, data.byteLength)));
      }
      expect(w.bytesWritten).toBe(data.byteLength);
      expect(await store.findMissing([d])).toEqual([d]);
      await w.commit();
      expect(await store.findMissing([d])).toEqual([]);
      expect((await collect(await store.read(d))).data).toEqual(data);
    });

    test("a small streamed upload works too", async () => {
      const a = blob("small streamed");
      const w = await store.beginWrite(a.digest);
      await w.write(a.data.subarray(0, 3));
      await w.write(a.data.subarray(3));
      await w.commit();
      expect(await store.get(a.digest)).toEqual(a.data);
    });

    test("a short or long upload fails INVALID_ARGUMENT and leaves nothing behind", async () => {
      for (const size of [10, 3 * CHUNK_BYTES]) {
        const data = bytesOf(size, 3);
        const d = digestOf("sha256", data);
        const short = await store.beginWrite(d);
        await short.write(data.subarray(0, size - 1));
        await expectCode(short.commit(), GrpcCode.INVALID_ARGUMENT);
        await short.abort();
        const long = await store.beginWrite(d);
        await long.write(data);
        await expectCode(long.write(new Uint8Array(1)), GrpcCode.INVALID_ARGUMENT);
        await long.abort();
        expect(await store.findMissing([d])).toEqual([d]);
      }
    });

    if (options.verifiesHashes) {
      test("a streamed upload of the wrong bytes fails INVALID_ARGUMENT at commit", async () => {
        const data = bytesOf(2 * CHUNK_BYTES, 4);
        const d = digestOf("sha256", data);
        const bad = data.slice();
        bad[12345] = (bad[12345] ?? 0) ^ 1;
        const w = await store.beginWrite(d);
        await w.write(bad);
        await expectCode(w.commit(), GrpcCode.INVALID_ARGUMENT);
        expect(await store.findMissing([d])).toEqual([d]);
      });
    }

    test("an aborted upload stores nothing, and abort may be repeated", async () => {
      const a = blob("aborted");
      const w = await store.beginWrite(a.digest);
      await w.write(a.data);
      await w.abort();
      await w.abort();
      expect(await store.findMissing([a.digest])).toEqual([a.digest]);
      await expectCode(w.commit(), GrpcCode.FAILED_PRECONDITION);
    });

    if (options.deletedBlobsMayReturn !== true) {
      test("delete removes blobs and ignores absent ones", async () => {
        const a = blob("to delete");
        const big = bytesOf(2 * CHUNK_BYTES, 9);
        const bd = digestOf("sha256", big);
        await store.put(a.digest, a.data);
        await store.put(bd, big);
        await store.delete([a.digest, bd, blob("never stored").digest]);
        expect(await store.findMissing([a.digest, bd])).toEqual([a.digest, bd]);
        await expectCode(store.get(a.digest), GrpcCode.NOT_FOUND);
      });
    } else {
      test("delete ignores absent blobs, and a deleted blob that comes back has its own bytes", async () => {
        const a = blob("to delete, maybe back");
        await store.put(a.digest, a.data);
        await store.delete([a.digest, blob("never stored").digest]);
        const back = await store.get(a.digest).catch((err: unknown) => {
          if (!isRpcError(err, GrpcCode.NOT_FOUND)) throw err;
          return undefined;
        });
        if (back !== undefined) expect(back).toEqual(a.data);
      });
    }

    test("an open read completes even if the blob is deleted meanwhile", async () => {
      const data = bytesOf(3 * CHUNK_BYTES, 11);
      const d = digestOf("sha256", data);
      await store.put(d, data);
      const it = (await store.read(d))[Symbol.asyncIterator]();
      const first = await it.next();
      await store.delete([d]);
      const parts = [first.value as Uint8Array];
      for (let r = await it.next(); !r.done; r = await it.next()) parts.push(r.value);
      expect(Buffer.concat(parts)).toEqual(Buffer.from(data));
    });

    test("list reports every blob with its last use; touch, get and findMissing move it", async () => {
      const a = blob("listed a");
      const b = blob("listed b");
      await store.put(a.digest, a.data);
      await store.put(b.digest, b.data);
      const t0 = clock.nowMs();
      const seen = async () => {
        const m = new Map<string, number>();
        for await (const s of store.list()) m.set(s.digest.hash, s.lastUsedMs);
        return m;
      };
      const before = await seen();
      expect(before.get(a.digest.hash)).toBe(t0);
      expect(before.get(b.digest.hash)).toBe(t0);
      clock.advance(1000);
      await store.touch([a.digest]);
      expect((await seen()).get(a.digest.hash)).toBe(t0 + 1000);
      clock.advance(1000);
      await store.get(b.digest);
      expect((await seen()).get(b.digest.hash)).toBe(t0 + 2000);
      clock.advance(1000);
      await store.findMissing([a.digest]);
      const after = await seen();
      expect(after.get(a.digest.hash)).toBe(t0 + 3000);
      expect(after.get(b.digest.hash)).toBe(t0 + 2000);
    });

    test("a streamed read counts as a use, like get", async () => {
      const small = blob("streamed small");
      const large = bytesOf(2 * CHUNK_BYTES + 3, 17);
      const ld = digestOf("sha256", large);
      await store.put(small.digest, small.data);
      await store.put(ld, large);
      const t0 = clock.nowMs();
      clock.advance(1000);
      expect((await collect(await store.read(small.digest))).data).toEqual(small.data);
      clock.advance(1000);
      expect((await collect(await store.read(ld, CHUNK_BYTES))).data).toEqual(large.subarray(CHUNK_BYTES));
      const seen = new Map<string, number>();
      for await (const s of store.list()) seen.set(s.digest.hash, s.lastUsedMs);
      expect(seen.get(small.digest.hash)).toBe(t0 + 1000);
      expect(seen.get(ld.hash)).toBe(t0 + 2000);
    });

    test("filePath, where offered, names a file holding exactly the blob", async () => {
      const data = bytesOf(2 * CHUNK_BYTES + 1, 13);
      const d = digestOf("sha256", data);
      await store.put(d, data);
      const path = await store.filePath?.(d);
      if (path !== undefined) expect(new Uint8Array(await readFile(path)) as Uint8Array).toEqual(data);
    });
  });
}
