/**
 * A cache carried to another store in a file: Bazel 4.2.3 fills lre server 1,
 * `lre export` writes a bundle from its data dir (while it runs), `lre import`
 * loads it into an empty data dir, and a clean build against server 2 on that
 * dir takes every action from the cache.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BazelWorkspace, countOf } from "../support/bazel";
import { startLre, type LreServer } from "../support/lre-server";
import { lre } from "../cli/lre-process";

const FIXTURE = join(import.meta.dir, "workspaces", "cache-chain");
/** Cacheable actions in the fixture (see bazel-cache.test.ts). */
const ACTIONS = 4;
const OUTPUTS = ["greeting.txt", "upper.txt", "bytes.bin", "joined.txt", "tree"];

let scratch: string | undefined;
let server1: LreServer | undefined;
let server2: LreServer | undefined;
let ws: BazelWorkspace | undefined;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "lre-bundle-e2e-"));
  server1 = await startLre();
  ws = await BazelWorkspace.create({ copyFrom: FIXTURE });
}, 600_000);

afterAll(async () => {
  try {
    await ws?.dispose();
  } finally {
    try {
      await server1?.dispose();
      await server2?.dispose();
    } finally {
      if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
    }
  }
}, 120_000);

describe("a bundle moves Bazel's cache from one lre to another", () => {
  test("after export from server 1 and import into an empty data dir, a clean build against server 2 is all remote cache hits", async () => {
    const workspace = ws!;
    const first = await workspace.build(["//..."], [`--remote_cache=${server1!.unixUri}`]);
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    const built = workspace.readOutputs(OUTPUTS);

    const file = join(scratch!, "team.lrebundle");
    const exported = await lre(["export", file, "--data-dir", server1!.dataDir]);
    expect(exported.stderr).toBe("");
    expect(exported.stdout).toMatch(new RegExp(`^exported \\d+ blobs \\(.+\\) and ${ACTIONS} action results to `));

    const dataDir2 = join(scratch!, "data2");
    const imported = await lre(["import", file, "--data-dir", dataDir2]);
    expect(imported.stderr).toBe("");
    expect(imported.stdout).toMatch(new RegExp(`^added \\d+ blobs \\(.+\\) and ${ACTIONS} action results; 0 already present\\n$`));

    server2 = await startLre({ dataDir: dataDir2 });
    await workspace.clean();
    const second = await workspace.build(["//..."], [`--remote_cache=${server2.unixUri}`]);
    expect(countOf(second.summary, "remote cache hit")).toBe(ACTIONS);
    expect(second.summary.total - countOf(second.summary, "internal")).toBe(ACTIONS);
    expect(workspace.readOutputs(OUTPUTS)).toEqual(built);
  }, 600_000);
});
