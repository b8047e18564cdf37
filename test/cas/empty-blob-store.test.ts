import { describe, expect, test } from "bun:test";
import { EmptyBlobStore } from "../../src/cas/empty-blob-store";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { emptyDigest } from "../../src/digest/digest";
import { GrpcCode } from "../../src/errors";
import { blob, collect, expectCode, runBlobStoreConformance } from "./blob-store.conformance";

runBlobStoreConformance("EmptyBlobStore over MemoryBlobStore", async ({ clock }) => new EmptyBlobStore(new MemoryBlobStore({ clock })), {
  verifiesHashes: true,
});

describe("EmptyBlobStore", () => {
  test("the empty blob of each digest function is present and readable without ever being stored", async () => {
    const store = new EmptyBlobStore(new MemoryBlobStore());
    const sha = emptyDigest("sha256");
    const b3 = emptyDigest("blake3");
    const other = blob("not empty");
    expect(await store.findMissing([sha, b3, other.digest])).toEqual([other.digest]);
    expect(await store.get(b3)).toEqual(new Uint8Array(0));
    expect((await collect(await store.read(sha))).data.byteLength).toBe(0);
    await store.delete([sha]);
    expect(await store.findMissing([sha])).toEqual([]);
    const seen: string[] = [];
    for await (const b of store.list()) seen.push(b.digest.hash);
    expect(seen).toEqual([]);
  });

  test("uploading the empty blob succeeds only with zero bytes", async () => {
    const store = new EmptyBlobStore(new MemoryBlobStore());
    const d = emptyDigest("sha256");
    const w = await store.beginWrite(d);
    await w.commit();
    await expectCode(store.put(d, new Uint8Array(1)), GrpcCode.INVALID_ARGUMENT);
    const bad = await store.beginWrite(d);
    await expectCode(bad.write(new Uint8Array(3)), GrpcCode.INVALID_ARGUMENT);
  });

  test("a zero-size digest with another hash is not the empty blob", async () => {
    const store = new EmptyBlobStore(new MemoryBlobStore());
    const fake = { fn: "sha256" as const, hash: "0".repeat(64), sizeBytes: 0 };
    expect(await store.findMissing([fake])).toEqual([fake]);
    await expectCode(store.put(fake, new Uint8Array(0)), GrpcCode.INVALID_ARGUMENT);
  });
});
