import { expect, test } from "bun:test";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { GrpcCode } from "../../src/errors";
import { blob, expectCode, runBlobStoreConformance } from "./blob-store.conformance";

runBlobStoreConformance("MemoryBlobStore", async ({ clock }) => new MemoryBlobStore({ clock }), { verifiesHashes: true });

test("MemoryBlobStore keeps its own copy of put bytes", async () => {
  const store = new MemoryBlobStore();
  const a = blob("mutable");
  const data = a.data.slice();
  await store.put(a.digest, data);
  data.fill(0);
  expect(await store.get(a.digest)).toEqual(a.data);
  await store.close();
  await expectCode(store.get(a.digest), GrpcCode.UNAVAILABLE);
});
