import { afterAll } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { LmdbBlobStore } from "../../src/cas/lmdb-blob-store";
import { runBlobStoreConformance } from "./blob-store.conformance";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(`${tmpdir()}/lre-lmdb-`);
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

runBlobStoreConformance("LmdbBlobStore", async ({ clock }) => LmdbBlobStore.open({ dataDir: await tempDir(), clock }));
runBlobStoreConformance("LmdbBlobStore with a 16-byte inline threshold", async ({ clock }) =>
  LmdbBlobStore.open({ dataDir: await tempDir(), clock, inlineMaxBytes: 16 }),
);
