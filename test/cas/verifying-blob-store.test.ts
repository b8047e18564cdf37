import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { LmdbBlobStore } from "../../src/cas/lmdb-blob-store";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { VerifyingBlobStore } from "../../src/cas/verifying-blob-store";
import { hashBytes } from "../../src/digest/hasher";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode, isRpcError } from "../../src/errors";
import { blob, bytesOf, collect, expectCode, runBlobStoreConformance } from "./blob-store.conformance";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

runBlobStoreConformance(
  "VerifyingBlobStore over a non-verifying MemoryBlobStore",
  async ({ clock }) => new VerifyingBlobStore(new MemoryBlobStore({ clock, verify: false }), { verifyOnRead: true }),
  { verifiesHashes: true },
);

describe("VerifyingBlobStore", () => {
  test("a wrong hash is INVALID_ARGUMENT naming the expected and actual hash", async () => {
    const store = new VerifyingBlobStore(new MemoryBlobStore({ verify: false }));
    const a = blob("claimed");
    const actual = blob("payload");
    const err = await expectCode(store.put({ ...a.digest, sizeBytes: 7 }, actual.data), GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain(a.digest.hash);
    expect(err.message).toContain(actual.digest.hash);
    expect(await store.findMissing([{ ...a.digest, sizeBytes: 7 }])).toHaveLength(1);
  });

  test("an upload one byte short or long is INVALID_ARGUMENT naming both sizes", async () => {
    const store = new VerifyingBlobStore(new MemoryBlobStore({ verify: false }));
    const data = bytesOf(1000);
    const d = digestOf("blake3", data);
    const short = await store.beginWrite(d);
    await short.write(data.subarray(1));
    const err = await expectCode(short.commit(), GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain("expected 1000, actual 999");
    const long = await store.beginWrite(d);
    await long.write(data);
    await expectCode(long.write(new Uint8Array(1)), GrpcCode.INVALID_ARGUMENT);
    expect(await store.findMissing([d])).toEqual([d]);
  });

  test("64 racing uploads of one digest, half corrupt: honest ones succeed, the stored blob re-hashes, no temp files remain", async () => {
    const dataDir = await mkdtemp(`${tmpdir()}/lre-verify-`);
    dirs.push(dataDir);
    const store = new VerifyingBlobStore(await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024 }));
    const data = bytesOf(300_000, 5);
    const d = digestOf("sha256", data);
    const results = await Promise.all(
      Array.from({ length: 64 }, async (_, i) => {
        const bytes = data.slice();
        if (i % 2 === 1) bytes[i * 1000] = (bytes[i * 1000] ?? 0) ^ 0xff;
        const w = await store.beginWrite(d);
        try {
          for (let at = 0; at < bytes.byteLength; at += 65536) {
            await w.write(bytes.subarray(at, at + 65536));
            await Bun.sleep(0);
          }
          await w.commit();
          return "ok";
        } catch (err) {
          await w.abort();
          return isRpcError(err, GrpcCode.INVALID_ARGUMENT) ? "invalid" : String(err);
        }
      }),
    );
    expect(results.filter((r, i) => i % 2 === 0 && r === "ok")).toHaveLength(32);
    expect(results.filter((r, i) => i % 2 === 1 && r === "invalid")).toHaveLength(32);
    const stored = (await collect(await store.read(d))).data;
    expect(hashBytes("sha256", stored)).toBe(d.hash);
    expect(await readdir(`${dataDir}/tmp`)).toEqual([]);
    await store.close();
  });

  test("verify-on-read deletes a corrupt stored blob and reports it NOT_FOUND, serving no bytes", async () => {
    const base = new MemoryBlobStore({ verify: false });
    const store = new VerifyingBlobStore(base, { verifyOnRead: true });
    const good = blob("good bytes");
    const rotten = good.data.slice();
    rotten[0] = (rotten[0] ?? 0) ^ 1;
    for (const serve of [() => store.get(good.digest), () => store.read(good.digest)]) {
      await base.put(good.digest, rotten);
      await expectCode(serve(), GrpcCode.NOT_FOUND);
      expect(await store.findMissing([good.digest])).toEqual([good.digest]);
    }
    await store.put(good.digest, good.data);
    expect(await store.get(good.digest)).toEqual(good.data);
  });
});
