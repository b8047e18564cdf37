import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ManualClock } from "../../src/clock";
import type { Digest } from "../../src/digest/digest";
import { CacheLease, FileCache } from "../../src/exec/file-cache";
import { walkInputTree } from "../../src/exec/input-tree";
import { stageInputs } from "../../src/exec/stage-inputs";
import { openStorage } from "../../src/storage/open-storage";
import { putBytes, putDirectory } from "./helpers";

const HOUR = 3600_000;
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("input staging", () => {
  // Bazel and Buck2 keep a running action's inputs only in the CAS; eviction
  // must see staging as a use, even when every input comes from the file cache
  // and the CAS is never read (reliability-targets E-4).
  test("counts as a use of every input blob, so inputs outlive an older untouched blob", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lre-stage-"));
    dirs.push(dir);
    const clock = new ManualClock();
    const storage = await openStorage({ dataDir: join(dir, "data"), maxBytes: 1 << 30, protectMs: HOUR, clock });
    try {
      const t0 = clock.nowMs();
      const source = await putBytes(storage.cas, "int main() { return 0; }\n".repeat(4));
      const tool = await putBytes(storage.cas, "#!/bin/sh\nexec cc \"$@\"\n".repeat(4));
      const root = await putDirectory(storage.cas, {
        files: [
          { name: "cc.sh", digest: tool, executable: true },
          { name: "main.c", digest: source },
        ],
      });
      const { tree } = await walkInputTree(storage.cas, root);
      const cache = new FileCache(join(dir, "filecache"), storage.cas);
      // The first staging fills the file cache from the CAS.
      await stageInputs(tree, join(dir, "exec-1"), [], cache, storage.cas, new CacheLease());

      clock.advance(2 * HOUR);
      const stale = await putBytes(storage.cas, "an output nobody asked for since");

      clock.advance(2 * HOUR);
      const usedAt = clock.nowMs();
      // Served entirely by hardlinks from the file cache: only staging's own touch records the use.
      await stageInputs(tree, join(dir, "exec-2"), [], cache, storage.cas, new CacheLease());

      const lastUse = await lastUses(storage.cas.list());
      expect(lastUse.get(source.hash)).toBe(usedAt);
      expect(lastUse.get(tool.hash)).toBe(usedAt);
      expect(lastUse.get(root.hash)).toBe(t0);

      // All three are out of the protection window; there is room for only two.
      clock.advance(2 * HOUR);
      await storage.gc(source.sizeBytes + tool.sizeBytes);
      const left = await lastUses(storage.cas.list());
      expect([left.has(source.hash), left.has(tool.hash), left.has(stale.hash)]).toEqual([true, true, false]);
    } finally {
      await storage.close();
    }
  });
});

async function lastUses(list: AsyncIterable<{ digest: Digest; lastUsedMs: number }>): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for await (const b of list) m.set(b.digest.hash, b.lastUsedMs);
  return m;
}
