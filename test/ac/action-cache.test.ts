import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { ActionCache } from "../../src/ac/action-cache";
import { LmdbActionCache } from "../../src/ac/lmdb-action-cache";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { digestOf } from "../../src/digest/hasher";
import { ActionResult } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function result(exitCode: number, stdout = ""): ActionResult {
  return ActionResult.fromPartial({ exitCode, stdoutRaw: Buffer.from(stdout) });
}

const action = digestOf("sha256", new TextEncoder().encode("action"));
const other = digestOf("blake3", new TextEncoder().encode("action"));

function runActionCacheConformance(name: string, make: () => Promise<{ ac: ActionCache; reopen?: () => Promise<ActionCache> }>): void {
  describe(`ActionCache conformance: ${name}`, () => {
    let ac: ActionCache;
    let reopen: (() => Promise<ActionCache>) | undefined;
    beforeEach(async () => {
      ({ ac, reopen } = await make());
    });
    afterEach(async () => {
      await ac.close();
    });

    test("an unknown action is a miss", async () => {
      expect(await ac.get("", action)).toBeUndefined();
    });

    test("a stored result comes back with its origin", async () => {
      await ac.put("", action, { result: result(0, "hi"), origin: "sandbox" });
      await ac.put("", other, { result: result(3), origin: "client" });
      const hit = await ac.get("", action);
      expect(hit?.origin).toBe("sandbox");
      expect(hit?.result.exitCode).toBe(0);
      expect(Buffer.from(hit?.result.stdoutRaw ?? []).toString()).toBe("hi");
      expect((await ac.get("", other))?.origin).toBe("client");
      expect((await ac.get("", other))?.result.exitCode).toBe(3);
    });

    test("instances are isolated from each other", async () => {
      await ac.put("team-a", action, { result: result(1), origin: "client" });
      expect(await ac.get("team-b", action)).toBeUndefined();
      expect(await ac.get("", action)).toBeUndefined();
      await ac.put("team-b", action, { result: result(2), origin: "client" });
      expect((await ac.get("team-a", action))?.result.exitCode).toBe(1);
      expect((await ac.get("team-b", action))?.result.exitCode).toBe(2);
    });

    test("a later put replaces the earlier result", async () => {
      await ac.put("", action, { result: result(1), origin: "client" });
      await ac.put("", action, { result: result(0), origin: "sandbox" });
      expect(await ac.get("", action)).toMatchObject({ origin: "sandbox", result: { exitCode: 0 } });
    });

    test("mutating a result after put or get does not change the cache", async () => {
      const r = result(5);
      await ac.put("", action, { result: r, origin: "client" });
      r.exitCode = 6;
      const got = await ac.get("", action);
      if (got !== undefined) got.result.exitCode = 7;
      expect((await ac.get("", action))?.result.exitCode).toBe(5);
    });

    test("results survive a reopen", async () => {
      if (reopen === undefined) return;
      await ac.put("i", action, { result: result(9), origin: "sandbox" });
      await ac.close();
      ac = await reopen();
      expect(await ac.get("i", action)).toMatchObject({ origin: "sandbox", result: { exitCode: 9 } });
    });
  });
}

runActionCacheConformance("MemoryActionCache", async () => ({ ac: new MemoryActionCache() }));
runActionCacheConformance("LmdbActionCache", async () => {
  const dataDir = await mkdtemp(`${tmpdir()}/lre-ac-`);
  dirs.push(dataDir);
  return { ac: await LmdbActionCache.open({ dataDir }), reopen: () => LmdbActionCache.open({ dataDir }) };
});
