import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { Digest } from "../../src/digest/digest";
import { missingSubject } from "../../src/digest/digest";
import { GrpcCode } from "../../src/errors";
import {
  EXECUTE_OPERATION_METADATA_TYPE_URL,
  EXECUTE_RESPONSE_TYPE_URL,
  REQUEST_METADATA_HEADER,
} from "../../src/grpc/execution-service";
import {
  ExecuteOperationMetadata,
  ExecuteRequest,
  ExecuteResponse,
  ExecutionStage_Value,
  RequestMetadata,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { PreconditionFailure } from "../../src/proto/google/rpc/error_details";
import { rpcError, statusDetails } from "../support/grpc-client";
import { type ExecHarness, startExecHarness } from "./exec-harness";
import { type CommandSpec, digestOfText, putAction, putBytes, putDirectory } from "./helpers";

let h: ExecHarness;
let sh: string;
let bin: string;

beforeAll(async () => {
  h = await startExecHarness({ jobs: 4 });
  bin = `${h.toolchain.toolchainA}/bin`;
  sh = h.toolchain.shell;
}, 300_000);
afterAll(async () => {
  await h?.close();
});

function lastResponse(ops: Operation[]): ExecuteResponse {
  const last = ops[ops.length - 1]!;
  expect(last.done).toBe(true);
  expect(last.error).toBeUndefined();
  expect(last.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
  return ExecuteResponse.decode(last.response!.value);
}

function stages(ops: Operation[]): ExecutionStage_Value[] {
  return ops.map((op) => {
    expect(op.metadata?.typeUrl).toBe(EXECUTE_OPERATION_METADATA_TYPE_URL);
    return ExecuteOperationMetadata.decode(op.metadata!.value).stage;
  });
}

async function blobText(d: { hash: string; sizeBytes: number } | undefined): Promise<string> {
  expect(d).toBeDefined();
  const digest: Digest = { fn: "sha256", hash: d!.hash, sizeBytes: d!.sizeBytes };
  return new TextDecoder().decode(await h.cas.get(digest));
}

/** An action over an empty input root (plus optional files), stored in the CAS. */
async function simpleAction(
  cmd: CommandSpec,
  extra: { files?: Record<string, string>; timeoutSeconds?: number; doNotCache?: boolean; platform?: Record<string, string> } = {},
): Promise<Digest> {
  const files = await Promise.all(
    Object.entries(extra.files ?? {})
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(async ([name, text]) => ({ name, digest: await putBytes(h.cas, text) })),
  );
  const root = await putDirectory(h.cas, { files });
  const { files: _f, ...rest } = extra;
  return putAction(h.cas, cmd, root, rest);
}

/** A salt keeps otherwise identical actions from sharing a cache entry across tests. */
let saltSeq = 0;
const salt = () => `t${++saltSeq}-${Date.now()}`;

describe("Execute end to end (real server, bubblewrap, Nix closure)", () => {
  test("a genrule-like action runs, its outputs land in the CAS, and the repeat is a cache hit", async () => {
    const inRoot = await putDirectory(h.cas, { files: [{ name: "in.txt", digest: await putBytes(h.cas, "hello lre\n") }] });
    const actionDigest = await putAction(
      h.cas,
      {
        argv: [sh, "-c", "mkdir -p out/gen && tr a-z A-Z < in.txt > out/gen/upper.txt && echo built"],
        env: { PATH: bin },
        outputFiles: ["out/gen/upper.txt"],
        outputPaths: ["out/gen/upper.txt"],
      },
      inRoot,
      { salt: salt() },
    );
    const ops = await h.clients.execute({ actionDigest, inlineStdout: true });
    const st = stages(ops);
    expect(st[0]).toBe(ExecutionStage_Value.CACHE_CHECK);
    expect(st).toContain(ExecutionStage_Value.EXECUTING);
    expect(st[st.length - 1]).toBe(ExecutionStage_Value.COMPLETED);
    expect(new Set(ops.map((o) => o.name)).size).toBe(1);

    const res = lastResponse(ops);
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.cachedResult).toBe(false);
    const result = res.result!;
    expect(result.exitCode).toBe(0);
    expect(result.stdoutRaw.toString()).toBe("built\n");
    expect(await blobText(result.stdoutDigest)).toBe("built\n");
    expect(result.outputFiles.map((f) => f.path)).toEqual(["out/gen/upper.txt"]);
    expect(await blobText(result.outputFiles[0]!.digest)).toBe("HELLO LRE\n");
    const meta = result.executionMetadata!;
    expect(meta.worker).toBe("lre-test-worker");
    for (const t of [meta.queuedTimestamp, meta.workerStartTimestamp, meta.executionStartTimestamp, meta.executionCompletedTimestamp, meta.workerCompletedTimestamp]) {
      expect(t?.seconds ?? 0).toBeGreaterThan(0);
    }

    const again = lastResponse(await h.clients.execute({ actionDigest }));
    expect(again.cachedResult).toBe(true);
    expect(again.result!.outputFiles).toEqual(result.outputFiles);
    // The exec dir is cleaned up.
    expect(readdirSync(`${h.dataDir}/exec`)).toEqual([]);
  });

  test("output directories come back as Trees; outputs can be in both legacy lists", async () => {
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", "mkdir -p d/sub && echo a > d/a && echo b > d/sub/b && ln -s a d/link"], env: { PATH: bin }, outputDirectories: ["d"], outputFiles: ["d"] },
      { platform: { salt: salt() } },
    );
    const result = lastResponse(await h.clients.execute({ actionDigest })).result!;
    expect(result.exitCode).toBe(0);
    expect(result.outputDirectories.map((d) => d.path)).toEqual(["d"]);
    expect(result.outputDirectories[0]!.treeDigest).toBeDefined();
    expect(result.outputDirectories[0]!.rootDirectoryDigest).toBeDefined();
  });

  test("a failing action: exit code and stderr in the result, OK status, not cached", async () => {
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", "echo 'compile error: bad thing' >&2; exit 3"], env: { PATH: bin } },
      { platform: { salt: salt() } },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStderr: true }));
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result!.exitCode).toBe(3);
    expect(res.result!.stderrRaw.toString()).toBe("compile error: bad thing\n");
    expect(await blobText(res.result!.stderrDigest)).toBe("compile error: bad thing\n");
    const err = await rpcError(h.clients.getActionResult({ actionDigest }));
    expect(err.code).toBe(GrpcCode.NOT_FOUND);
  });

  test("a timeout is DEADLINE_EXCEEDED with the partial stdout, and is not cached", async () => {
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", "echo partial output; sleep 30; echo never"], env: { PATH: bin } },
      { timeoutSeconds: 1, platform: { salt: salt() } },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest }));
    expect(res.status?.code).toBe(GrpcCode.DEADLINE_EXCEEDED);
    expect(res.message).toContain("timeout");
    expect(res.result).toBeDefined();
    expect(await blobText(res.result!.stdoutDigest)).toBe("partial output\n");
    expect((await rpcError(h.clients.getActionResult({ actionDigest }))).code).toBe(GrpcCode.NOT_FOUND);
  }, 30_000);

  test("Action.timeout above the server maximum is INVALID_ARGUMENT", async () => {
    const actionDigest = await simpleAction({ argv: [sh, "-c", "true"] }, { timeoutSeconds: 100_000 });
    const err = await rpcError(h.clients.execute({ actionDigest }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.details).toContain("maximum");
  });

  test("a daemon that double-forks leaves no process behind", async () => {
    const marker = 900000 + Math.floor(Math.random() * 99999);
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", `(setsid sh -c 'sleep ${marker}' &) ; (sh -c 'sleep ${marker + 1}' &) ; echo started`], env: { PATH: bin } },
      { platform: { salt: salt() } },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest }));
    expect(res.result!.exitCode).toBe(0);
    expect(await survivors(`sleep ${marker}`)).toEqual([]);
    expect(await survivors(`sleep ${marker + 1}`)).toEqual([]);
  }, 30_000);

  // A bounded bomb (2^9 processes, each lingering): an unbounded one is only
  // safe to run once the sandbox enforces a process limit (pids.max, S-5);
  // without it, it takes the whole host's pid budget with it, as root is
  // exempt from RLIMIT_NPROC.
  test("a swarm of forked processes is contained: the action ends, the server lives on, nothing is left running", async () => {
    const marker = `swarm${Math.floor(Math.random() * 1e9)}`;
    const actionDigest = await simpleAction(
      {
        argv: [sh, "-c", `${marker}() { if [ "$1" -gt 0 ]; then ${marker} $(($1 - 1)) & ${marker} $(($1 - 1)) & fi; sleep 1000; }; ${marker} 8 & sleep 1; echo spawned`],
        env: { PATH: bin },
      },
      { timeoutSeconds: 30, platform: { salt: salt() } },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.result!.exitCode).toBe(0);
    expect(res.result!.stdoutRaw.toString()).toBe("spawned\n");
    expect(await survivors(marker)).toEqual([]);
    // The server still executes actions afterwards.
    const after = await simpleAction({ argv: [sh, "-c", "echo ok"], env: { PATH: bin } }, { platform: { salt: salt() } });
    expect(lastResponse(await h.clients.execute({ actionDigest: after })).result!.exitCode).toBe(0);
  }, 60_000);

  test("a client that disconnects mid-Execute: the action still completes and is cached", async () => {
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", "sleep 1; echo late > out.txt"], env: { PATH: bin }, outputPaths: ["out.txt"] },
      { platform: { salt: salt() } },
    );
    const call = h.clients.execution.execute(ExecuteRequest.fromPartial({ actionDigest }));
    await new Promise<void>((resolve) => call.once("data", () => resolve()));
    call.on("error", () => {}); // the CANCELLED status we cause ourselves
    call.cancel();
    let cached;
    for (let i = 0; i < 100 && cached === undefined; i++) {
      await Bun.sleep(100);
      cached = await h.clients.getActionResult({ actionDigest }).catch(() => undefined);
    }
    expect(cached?.exitCode).toBe(0);
    expect(await blobText(cached!.outputFiles[0]!.digest)).toBe("late\n");
  }, 30_000);

  test("the same action submitted 20 times at once runs once", async () => {
    const actionDigest = await simpleAction(
      { argv: [sh, "-c", "sleep 1; echo once"], env: { PATH: bin } },
      { platform: { salt: salt() } },
    );
    const before = h.scheduler.stats();
    const all = await Promise.all(Array.from({ length: 20 }, () => h.clients.execute({ actionDigest })));
    const responses = all.map(lastResponse);
    expect(responses.every((r) => r.result!.exitCode === 0)).toBe(true);
    const after = h.scheduler.stats();
    expect(after.done - before.done).toBe(1);
    expect(after.deduplicated - before.deduplicated + responses.filter((r) => r.cachedResult).length).toBe(19);
  }, 30_000);

  test("do_not_cache actions are neither cached nor merged", async () => {
    const actionDigest = await simpleAction({ argv: [sh, "-c", "echo fresh"], env: { PATH: bin } }, { doNotCache: true, platform: { salt: salt() } });
    const before = h.scheduler.stats().done;
    await Promise.all([h.clients.execute({ actionDigest }), h.clients.execute({ actionDigest })]);
    expect(h.scheduler.stats().done - before).toBe(2);
    expect((await rpcError(h.clients.getActionResult({ actionDigest }))).code).toBe(GrpcCode.NOT_FOUND);
  }, 30_000);

  test("a store path outside the closure is explained in ExecuteResponse.message", async () => {
    const secret = `${h.toolchain.outsider}/secret`;
    // The path sits in an input file, not argv, so lre cannot add it to the closure by itself.
    const actionDigest = await simpleAction(
      { argv: [sh, "script.sh"], env: { PATH: bin } },
      { files: { "script.sh": `cat ${secret}\n` }, platform: { salt: salt() } },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest }));
    expect(res.result!.exitCode).not.toBe(0);
    expect(res.message).toContain(h.toolchain.outsider);
    expect(res.message).toContain("nix-closure");
  });

  test("store paths named in argv join the closure; unknown ones are FAILED_PRECONDITION naming the path", async () => {
    const seen = await simpleAction({ argv: [`${h.toolchain.toolchainB}/bin/hello`], env: { PATH: bin } }, { platform: { salt: salt() } });
    const res = lastResponse(await h.clients.execute({ actionDigest: seen, inlineStdout: true }));
    expect(res.result!.stdoutRaw.toString()).toBe("hello from toolchain-b\n");

    const bogus = "/nix/store/00000000000000000000000000000000-not-built";
    const missing = await simpleAction({ argv: [`${bogus}/bin/x`] });
    const err = await rpcError(h.clients.execute({ actionDigest: missing }));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(err.details).toContain(bogus);
  });

  test("Buck2 style: platform only on Command, no PATH, no digest_function, stream held to the end", async () => {
    const inRoot = await putDirectory(h.cas, {});
    const actionDigest = await putAction(
      h.cas,
      {
        argv: ["sh", "-c", 'echo "$PATH" > path.txt; hello > greeting.txt'],
        platform: { "nix-closure": h.toolchain.toolchainB, "container-image": "ignored", salt: salt() },
        outputPaths: ["greeting.txt", "path.txt"],
      },
      inRoot,
    );
    const md = new grpc.Metadata();
    md.set(REQUEST_METADATA_HEADER, Buffer.from(RequestMetadata.encode(RequestMetadata.fromPartial({ toolInvocationId: "buck2-build-1" })).finish()));
    const ops = await h.clients.execute({ actionDigest }, md);
    const res = lastResponse(ops);
    expect(res.result!.exitCode).toBe(0);
    const byPath = new Map(res.result!.outputFiles.map((f) => [f.path, f.digest]));
    expect(await blobText(byPath.get("greeting.txt"))).toBe("hello from toolchain-b\n");
    const path = await blobText(byPath.get("path.txt"));
    expect(path).toContain(`${h.toolchain.toolchainB}/bin`);
    expect(path).toContain(`${h.toolchain.toolchainA}/bin`);
  });

  test("missing inputs: one FAILED_PRECONDITION whose PreconditionFailure lists every blob as MISSING", async () => {
    const goneA = digestOfText("never uploaded a");
    const goneB = digestOfText("never uploaded b");
    const root = await putDirectory(h.cas, { files: [{ name: "a", digest: goneA }, { name: "b", digest: goneB }] });
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "cat a b"] }, root, { salt: salt() });
    const err = await rpcError(h.clients.execute({ actionDigest }));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    const details = statusDetails(err)!;
    expect(details.details.map((d) => d.typeUrl)).toEqual(["type.googleapis.com/google.rpc.PreconditionFailure"]);
    const failure = PreconditionFailure.decode(details.details[0]!.value);
    expect(failure.violations.map((v) => v.type)).toEqual(["MISSING", "MISSING"]);
    expect(failure.violations.map((v) => v.subject).sort()).toEqual([missingSubject(goneA), missingSubject(goneB)].sort());
  });

  test("a hostile input tree is INVALID_ARGUMENT before anything is written to disk", async () => {
    const x = await putBytes(h.cas, "x");
    const root = await putDirectory(h.cas, { files: [{ name: "..", digest: x }] });
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "true"] }, root, { salt: salt() });
    const before = existsSync(`${h.dataDir}/exec`) ? readdirSync(`${h.dataDir}/exec`) : [];
    const err = await rpcError(h.clients.execute({ actionDigest }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    const after = existsSync(`${h.dataDir}/exec`) ? readdirSync(`${h.dataDir}/exec`) : [];
    expect(after).toEqual(before);
  });

  test("WaitExecution: unknown names are NOT_FOUND; a finished operation streams its final state", async () => {
    expect((await rpcError(h.clients.waitExecution("operations/does-not-exist"))).code).toBe(GrpcCode.NOT_FOUND);
    const actionDigest = await simpleAction({ argv: [sh, "-c", "echo waited"], env: { PATH: bin } }, { platform: { salt: salt() } });
    const ops = await h.clients.execute({ actionDigest });
    const waited = await h.clients.waitExecution(ops[0]!.name);
    expect(waited.map((o) => o.name)).toEqual([ops[0]!.name]);
    expect(lastResponse(waited).result!.exitCode).toBe(0);
  });

  test("inputs are hardlinked read-only from the file cache, and an action cannot change them for others", async () => {
    const inRoot = await putDirectory(h.cas, { files: [{ name: "shared.txt", digest: await putBytes(h.cas, "original\n") }] });
    const actionDigest = await putAction(
      h.cas,
      { argv: [sh, "-c", "stat -c %a shared.txt; echo tampered >> shared.txt; chmod u+w shared.txt && echo tampered >> shared.txt; true"], env: { PATH: bin } },
      inRoot,
      { salt: salt() },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.result!.stdoutRaw.toString().split("\n")[0]).toBe("444");
    // Whatever the action managed, the next action sees the original bytes.
    const reader = await putAction(h.cas, { argv: [sh, "-c", "cat shared.txt"], env: { PATH: bin } }, inRoot, { salt: salt() });
    const next = lastResponse(await h.clients.execute({ actionDigest: reader, inlineStdout: true }));
    expect(next.result!.stdoutRaw.toString()).toBe("original\n");
  });
});

/**
 * Processes still mentioning `needle` once the kernel has had time to reap a
 * killed namespace: thousands of bomb processes take a moment to die, so this
 * waits for them to go rather than sampling once. Not a timing goal.
 */
async function survivors(needle: string): Promise<number[]> {
  let found = processesMentioning(needle);
  for (let i = 0; i < 100 && found.length > 0; i++) {
    await Bun.sleep(100);
    found = processesMentioning(needle);
  }
  return found;
}

/** Host processes whose command line contains `needle`. */
function processesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(needle)) found.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

describe("Execute progress", () => {
  let fast: ExecHarness;
  beforeAll(async () => {
    fast = await startExecHarness({ progressIntervalMs: 100 });
  }, 300_000);
  afterAll(async () => {
    await fast?.close();
  });

  test("while an action runs, its stage is re-sent at the configured interval until done", async () => {
    const root = await putDirectory(fast.cas, {});
    const actionDigest = await putAction(fast.cas, { argv: [fast.toolchain.shell, "-c", "sleep 1"] }, root, { salt: salt() });
    const ops = await fast.clients.execute({ actionDigest });
    const executing = stages(ops).filter((s) => s === ExecutionStage_Value.EXECUTING);
    expect(executing.length).toBeGreaterThan(2);
    expect(ops.filter((o) => o.done)).toHaveLength(1);
    expect(ops[ops.length - 1]!.done).toBe(true);
  }, 30_000);
});
