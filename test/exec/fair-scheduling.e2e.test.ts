import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Digest } from "../../src/digest/digest";
import { REQUEST_METADATA_HEADER } from "../../src/grpc/execution-service";
import { ExecuteResponse, RequestMetadata } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { type ExecHarness, startExecHarness } from "./exec-harness";
import { putAction, putDirectory } from "./helpers";

/**
 * Fairness between builds as clients identify them: Bazel and Buck2 send a
 * RequestMetadata header whose tool_invocation_id is the same for every
 * action of one build. With one job slot, a build that queued many actions
 * must not make a second build wait for all of them.
 */
let h: ExecHarness;

beforeAll(async () => {
  h = await startExecHarness({ jobs: 1 });
}, 300_000);
afterAll(async () => {
  // If the test failed before releasing A1, release it now so no sandbox outlives this file.
  for (const dir of (() => {
    try {
      return readdirSync(join(h.dataDir, "exec"));
    } catch {
      return [];
    }
  })()) {
    try {
      writeFileSync(join(h.dataDir, "exec", dir, "root", "go"), "");
    } catch {
      // already gone
    }
  }
  await h?.close();
});

function asBuild(invocation: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(REQUEST_METADATA_HEADER, Buffer.from(RequestMetadata.encode(RequestMetadata.fromPartial({ toolInvocationId: invocation, actionId: "fair" })).finish()));
  return md;
}

async function actionOf(label: string, script: string): Promise<Digest> {
  const root = await putDirectory(h.cas, {});
  return putAction(h.cas, { argv: [h.toolchain.shell, "-c", script] }, root, { salt: `fair-${label}-${Date.now()}` });
}

/** Waits for `cond`; one that throws (e.g. the exec dir not created yet) counts as not yet. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  const holds = (): boolean => {
    try {
      return cond();
    } catch {
      return false;
    }
  };
  while (!holds()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await Bun.sleep(5);
  }
}

function startMs(ops: Operation[]): number {
  const last = ops[ops.length - 1]!;
  const res = ExecuteResponse.decode(last.response!.value);
  expect(res.status?.code ?? 0).toBe(0);
  expect(res.result!.exitCode).toBe(0);
  const t = res.result!.executionMetadata!.executionStartTimestamp!;
  return t.seconds * 1000 + t.nanos / 1e6;
}

describe("fair scheduling between builds (RequestMetadata.tool_invocation_id)", () => {
  test("with one slot, build B's action runs before the rest of build A's queue", async () => {
    // A1 holds the only slot until the test lets it go (a file appearing in
    // its input root), so the queue is built while nothing else can start;
    // it gives up by itself after ≈50 s so a failed test leaves nothing running.
    const a1 = h.clients.execute({ actionDigest: await actionOf("A1", "i=0; while [ ! -e go ] && [ $i -lt 2500 ]; do sleep 0.02; i=$((i+1)); done") }, asBuild("build-A"));
    await until(() => h.scheduler.stats().running === 1 && readdirSync(join(h.dataDir, "exec")).length === 1, "A1 holds the slot");

    const queued: [string, Promise<Operation[]>][] = [];
    for (const label of ["A2", "A3", "A4"]) {
      queued.push([label, h.clients.execute({ actionDigest: await actionOf(label, "true") }, asBuild("build-A"))]);
      await until(() => h.scheduler.stats().queued === queued.length, `${label} is queued`);
    }
    queued.push(["B1", h.clients.execute({ actionDigest: await actionOf("B1", "true") }, asBuild("build-B"))]);
    await until(() => h.scheduler.stats().queued === 4, "B1 is queued");
    expect(h.scheduler.stats().clients).toBe(2);

    const [a1Dir] = readdirSync(join(h.dataDir, "exec"));
    writeFileSync(join(h.dataDir, "exec", a1Dir!, "root", "go"), "");

    const started = new Map<string, number>([["A1", startMs(await a1)]]);
    for (const [label, ops] of queued) started.set(label, startMs(await ops));
    const order = [...started.keys()].sort((x, y) => started.get(x)! - started.get(y)!);

    // Round-robin between the two builds: B waits for at most one more of A's actions.
    expect(order.indexOf("B1")).toBeLessThan(order.indexOf("A3"));
    expect(order.indexOf("B1")).toBeLessThan(order.indexOf("A4"));
    // Within a build, first come, first served.
    expect(order.filter((l) => l.startsWith("A"))).toEqual(["A1", "A2", "A3", "A4"]);
  }, 60_000);
});
