/**
 * Bazel 4.2.3 through lre fronts (`lre serve --upstream`), with a second real
 * lre as the shared upstream on loopback TCP. Each front is Bazel's
 * --remote_cache over its Unix socket; the fronts never talk to each other,
 * only to the upstream. Fixture: workspaces/cache-chain (four cacheable
 * actions, one with an output directory).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { BazelWorkspace, countOf, type ProcessSummary } from "../support/bazel";
import { startLre, type LreServer } from "../support/lre-server";
import { FROM_SOURCE, lre } from "../cli/lre-process";

const FIXTURE = join(import.meta.dir, "workspaces", "cache-chain");
const ACTIONS = 4;
const OUTPUTS = ["greeting.txt", "upper.txt", "bytes.bin", "joined.txt", "tree"];
const TEST_TIMEOUT_MS = 300_000;

let upstream: LreServer | undefined;
const fronts: LreServer[] = [];
let ws: BazelWorkspace | undefined;

function actionCount(summary: ProcessSummary): number {
  return summary.total - countOf(summary, "internal");
}
function workspace(): BazelWorkspace {
  if (ws === undefined) throw new Error("the Bazel workspace was not created; see beforeAll");
  return ws;
}
function up(): LreServer {
  if (upstream === undefined) throw new Error("the upstream lre did not start; see beforeAll");
  return upstream;
}

async function startFront(): Promise<LreServer> {
  const front = await startLre({ args: ["--no-exec", "--upstream", `grpc://${up().tcpAddress}`] });
  fronts.push(front);
  return front;
}

interface Stats {
  acEntries: number;
  upstream: { reachable: boolean | null; queued: number } | null;
}
async function stats(dataDir: string): Promise<Stats> {
  const r = await lre(["stats", "--data-dir", dataDir, "--json"], { cmd: FROM_SOURCE });
  if (r.exitCode !== 0) throw new Error(`lre stats failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Stats;
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await Bun.sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting until ${what}`);
}

beforeAll(async () => {
  upstream = await startLre({ tcp: true, args: ["--no-exec"] });
  ws = await BazelWorkspace.create({ copyFrom: FIXTURE });
}, 600_000);

afterAll(async () => {
  try {
    await ws?.dispose();
  } finally {
    for (const f of fronts) await f.dispose().catch(() => undefined);
    await upstream?.dispose();
  }
}, 120_000);

describe("Bazel 4.2.3 through lre fronts sharing one upstream lre", () => {
  let built: Map<string, { bytes: Uint8Array; executable: boolean }> | undefined;

  test("a build through front 1 fills front 1 and, in the background, the upstream", async () => {
    const front1 = await startFront();
    await workspace().clean();
    const first = await workspace().build(["//..."], [`--remote_cache=${front1.unixUri}`]);
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    expect(actionCount(first.summary)).toBe(ACTIONS);
    built = workspace().readOutputs(OUTPUTS);

    expect((await stats(front1.dataDir)).acEntries).toBe(ACTIONS);
    await eventually("front 1 has uploaded everything", async () => (await stats(front1.dataDir)).upstream?.queued === 0);
    expect((await stats(up().dataDir)).acEntries).toBe(ACTIONS);
    expect((await stats(front1.dataDir)).upstream?.reachable).toBe(true);
  }, TEST_TIMEOUT_MS);

  test("a second front with an empty store serves every action as a remote cache hit, via the upstream", async () => {
    const front2 = await startFront();
    expect((await stats(front2.dataDir)).acEntries).toBe(0);
    await workspace().clean();
    const second = await workspace().build(["//..."], [`--remote_cache=${front2.unixUri}`]);
    expect(countOf(second.summary, "remote cache hit")).toBe(ACTIONS);
    expect(actionCount(second.summary)).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built!);
    // Kept locally: front 2 now answers on its own.
    expect((await stats(front2.dataDir)).acEntries).toBe(ACTIONS);
  }, TEST_TIMEOUT_MS);

  test("stopping the upstream in the middle of a build leaves the build green", async () => {
    const front3 = await startFront();
    // A slow action in a fresh instance: nothing is cached anywhere, so the
    // build asks the upstream, runs locally, and uploads while the upstream goes away.
    workspace().writeFile(
      "slow/BUILD.bazel",
      'genrule(name = "slow", outs = ["slow.txt"], cmd = "sleep 4; echo slow > $@")\n',
    );
    await workspace().clean();
    const flags = [`--remote_cache=${front3.unixUri}`, "--remote_instance_name=mid-build"];
    const building = workspace().tryBuild(["//..."], flags);
    await eventually("front 3 has seen its first action-cache lookup", async () => {
      const r = await lre(["stats", "--data-dir", front3.dataDir, "--json"], { cmd: FROM_SOURCE });
      const s = JSON.parse(r.stdout) as { acHits: number; acMisses: number };
      return s.acHits + s.acMisses > 0;
    });
    await up().kill9();
    const result = await building;
    expect(result.exitCode).toBe(0);
    expect(result.summary === undefined ? -1 : actionCount(result.summary)).toBe(ACTIONS + 1);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built!);

    expect((await stats(front3.dataDir)).acEntries).toBe(ACTIONS + 1);
    // The status file is republished about once a second, and the uploader
    // notices the dead upstream on its next attempt: wait for both.
    await eventually("front 3 reports the upstream unreachable", async () => {
      const s = await stats(front3.dataDir);
      return s.upstream?.reachable === false;
    });
    expect((await stats(front3.dataDir)).upstream?.queued).toBeGreaterThan(0);

    // And the next clean build is all hits from front 3 alone.
    await workspace().clean();
    const again = await workspace().build(["//..."], flags);
    expect(countOf(again.summary, "remote cache hit")).toBe(ACTIONS + 1);
  }, TEST_TIMEOUT_MS);
});
