import { afterAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createBlobStore } from "../../src/cas/create-blob-store";
import { emptyDigest } from "../../src/digest/digest";
import { runBlobStoreConformance } from "./blob-store.conformance";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

runBlobStoreConformance(
  "createBlobStore(verifying -> empty -> size-bounded -> memory)",
  async ({ clock }) =>
    createBlobStore(
      { kind: "verifying", verifyOnRead: true, backend: { kind: "empty", backend: { kind: "size-bounded", maxBytes: 1 << 30, backend: { kind: "memory", verify: false } } } },
      { clock },
    ),
  { verifiesHashes: true },
);

test("createBlobStore builds an LMDB stack whose name shows its layers", async () => {
  const dataDir = await mkdtemp(`${tmpdir()}/lre-create-`);
  dirs.push(dataDir);
  const store = await createBlobStore({ kind: "empty", backend: { kind: "lmdb", dataDir, inlineMaxBytes: 1024 } });
  expect(store.name).toBe("empty(lmdb)");
  expect(await store.findMissing([emptyDigest("blake3")])).toEqual([]);
  await store.close();
});
