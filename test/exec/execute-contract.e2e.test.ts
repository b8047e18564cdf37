import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import type { Digest } from "../../src/digest/digest";
import { missingSubject, toWire } from "../../src/digest/digest";
import { GrpcCode } from "../../src/errors";
import { startDiskCollection } from "../../src/exec/disk-collector";
import { createLocalExecution } from "../../src/exec/local-execution";
import type { LocalExecutor } from "../../src/exec/local-executor";
import { type ActionExecutor, EXECUTE_RESPONSE_TYPE_URL } from "../../src/grpc/execution-service";
import { ActionResult, ExecuteResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { PreconditionFailure } from "../../src/proto/google/rpc/error_details";
import { rpcError } from "../support/grpc-client";
import { type ExecHarness, startExecHarness } from "./exec-harness";
import { type CommandSpec, putAction, putBytes, putDirectory } from "./helpers";

function lastResponse(ops: Operation[]): ExecuteResponse {
  const last = ops[ops.length - 1]!;
  expect(last.done).toBe(true);
  expect(last.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
  return ExecuteResponse.decode(last.response!.value);
}

let seq = 0;
const salt = () => `contract-${++seq}-${Date.now()}`;

let h: ExecHarness;
let sh: string;
let bin: string;
beforeAll(async () => {
  h = await startExecHarness({ jobs: 4 });
  sh = h.toolchain.shell;
  bin = `${h.toolchain.toolchainA}/bin`;
}, 300_000);
afterAll(async () => {
  await h?.close();
});

describe("Execute: inputs", () => {
  test("an input symlink with an absolute target resolves inside the sandbox, e.g. into the closure (M1)", async () => {
    const root = await putDirectory(h.cas, { symlinks: [{ name: "greeting", target: `${h.toolchain.toolchainB}/share/greeting` }] });
    const actionDigest = await putAction(
      h.cas,
      { argv: [sh, "-c", "cat greeting"], env: { PATH: bin }, platform: { "nix-closure": `${h.toolchain.toolchainA} ${h.toolchain.toolchainB}` } },
      root,
      { salt: salt() },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result!.stdoutRaw.toString()).toBe("hello from toolchain-b\n");
  });

  for (const executable of [true, false]) {
    test(`an input with is_executable ${executable} is mode ${executable ? "555" : "444"} inside, and ./tool ${executable ? "runs" : "is refused"}`, async () => {
      const script = await putBytes(h.cas, `#!${sh}\necho tool ran\n`);
      const root = await putDirectory(h.cas, { files: [{ name: "tool", digest: script, executable }] });
      const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "stat -c %a tool; ./tool"], env: { PATH: bin } }, root, { salt: salt() });
      const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
      expect(res.status?.code ?? 0).toBe(0);
      if (executable) {
        expect(res.result!.exitCode).toBe(0);
        expect(res.result!.stdoutRaw.toString()).toBe("555\ntool ran\n");
      } else {
        expect(res.result!.exitCode).toBe(126); // the shell's "found but cannot execute"
        expect(res.result!.stdoutRaw.toString()).toBe("444\n");
      }
    });
  }

  test("an output (or working directory) whose path passes through an input file is INVALID_ARGUMENT naming both", async () => {
    const root = await putDirectory(h.cas, { files: [{ name: "f", digest: await putBytes(h.cas, "an input file\n") }] });
    const cases: [Partial<CommandSpec>, string][] = [
      [{ outputPaths: ["f/out.txt"] }, 'Command.output_paths entry "f/out.txt"'],
      [{ outputFiles: ["f/deeper/out.txt"] }, 'Command.output_files entry "f/deeper/out.txt"'],
      [{ outputDirectories: ["f/d"] }, 'Command.output_directories entry "f/d"'],
      [{ workingDirectory: "f", outputPaths: ["out.txt"] }, "Command.working_directory"],
    ];
    for (const [cmd, field] of cases) {
      const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "true"], ...cmd }, root, { salt: salt() });
      const err = await rpcError(h.clients.execute({ actionDigest }));
      expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
      expect(err.details).toContain(`${field} passes through "f", which is an input file or symlink, not a directory`);
    }
  });

  test("a relative input symlink escaping the root with .. is still INVALID_ARGUMENT", async () => {
    const root = await putDirectory(h.cas, { symlinks: [{ name: "up", target: "../../etc/passwd" }] });
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "true"] }, root, { salt: salt() });
    expect((await rpcError(h.clients.execute({ actionDigest }))).code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  test("an input blob that vanishes between prepare and staging is FAILED_PRECONDITION listing it MISSING (M3)", async () => {
    const blob = await putBytes(h.cas, `short-lived ${salt()}`);
    const root = await putDirectory(h.cas, { files: [{ name: "in", digest: blob }] });
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "cat in"] }, root, { salt: salt() });
    const prepared = await h.executor.prepare({ instance: "", actionDigest });
    await h.cas.delete([blob]); // evicted or repaired meanwhile
    const res = await h.executor.execute(prepared);
    expect(res.status?.code).toBe(GrpcCode.FAILED_PRECONDITION);
    const failure = PreconditionFailure.decode(res.status!.details[0]!.value);
    expect(failure.violations.map((v) => [v.type, v.subject])).toEqual([["MISSING", missingSubject(blob)]]);
  });

  test("if staging or the closure view fails early, the other is finished before the exec dir is removed (L3)", async () => {
    const viewsFile = join(h.dir, "views-is-a-file");
    writeFileSync(viewsFile, "");
    const broken = await startExecHarness({ viewsDir: join(viewsFile, "views") });
    try {
      const files = [];
      for (let i = 0; i < 3000; i++) files.push({ name: `f${String(i).padStart(5, "0")}`, digest: await putBytes(broken.cas, `file ${i}`) });
      const root = await putDirectory(broken.cas, { files });
      const actionDigest = await putAction(broken.cas, { argv: [sh, "-c", "true"] }, root, { salt: salt() });
      const res = lastResponse(await broken.clients.execute({ actionDigest }));
      expect(res.status?.code ?? 0).not.toBe(0);
      expect(readdirSync(join(broken.dataDir, "exec"))).toEqual([]);
    } finally {
      await broken.close();
    }
  }, 60_000);

  test("while queued, an action may keep only its root digest; its tree is read again when it starts (M7)", async () => {
    const lean = await startExecHarness({ maxRetainedTreeNodes: 0 });
    try {
      const root = await putDirectory(lean.cas, { files: [{ name: "in.txt", digest: await putBytes(lean.cas, "kept by digest\n") }] });
      const actionDigest = await putAction(lean.cas, { argv: [sh, "-c", "cat in.txt"], env: { PATH: bin } }, root, { salt: salt() });
      const prepared = await lean.executor.prepare({ instance: "", actionDigest, inlineStdout: true });
      lean.executor.queued(prepared);
      expect(prepared.tree.tree).toBeUndefined();
      const res = await lean.executor.execute(prepared);
      expect(res.result!.stdoutRaw.toString()).toBe("kept by digest\n");
    } finally {
      await lean.close();
    }
  });
});

describe("Execute: commands", () => {
  for (const [what, argv, env] of [
    ["an environment variable name containing '='", [() => sh, "-c", "true"], { "A=B": "x" }],
    ["an empty environment variable name", [() => sh, "-c", "true"], { "": "x" }],
    ["NUL in an environment value", [() => sh, "-c", "true"], { A: "x\0y" }],
    ["NUL in an argument", [() => sh, "-c", "true\0"], {}],
  ] as const) {
    test(`${what} is INVALID_ARGUMENT before anything runs (L2)`, async () => {
      const root = await putDirectory(h.cas, {});
      const args = argv.map((a) => (typeof a === "function" ? a() : a));
      const actionDigest = await putAction(h.cas, { argv: args, env: { ...env } }, root, { salt: salt() });
      expect((await rpcError(h.clients.execute({ actionDigest }))).code).toBe(GrpcCode.INVALID_ARGUMENT);
    });
  }
});

describe("Execute: working directory", () => {
  test("Command.working_directory: the action runs there, and outputs are named relative to it", async () => {
    const sub = await putDirectory(h.cas, { files: [{ name: "in.txt", digest: await putBytes(h.cas, "from sub\n") }] });
    const root = await putDirectory(h.cas, { dirs: [{ name: "sub", digest: sub }] });
    const actionDigest = await putAction(
      h.cas,
      {
        argv: [sh, "-c", "pwd > cwd.txt; mkdir -p gen/d && cat in.txt > gen/copy.txt && echo x > gen/d/x"],
        env: { PATH: bin },
        workingDirectory: "sub",
        // gen/ is created by the action; lre creates parents of output paths as needed.
        outputPaths: ["cwd.txt", "gen/copy.txt", "gen/d"],
      },
      root,
      { salt: salt() },
    );
    const res = lastResponse(await h.clients.execute({ actionDigest }));
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result!.exitCode).toBe(0);
    const files = new Map(res.result!.outputFiles.map((f) => [f.path, f.digest]));
    expect([...files.keys()].sort()).toEqual(["cwd.txt", "gen/copy.txt"]);
    expect(res.result!.outputDirectories.map((d) => d.path)).toEqual(["gen/d"]);
    const text = async (d: { hash: string; sizeBytes: number } | undefined) =>
      new TextDecoder().decode(await h.cas.get({ fn: "sha256", hash: d!.hash, sizeBytes: d!.sizeBytes }));
    expect(await text(files.get("cwd.txt"))).toBe("/build/root/sub\n");
    expect(await text(files.get("gen/copy.txt"))).toBe("from sub\n");
  });
});

describe("Execute: results", () => {
  test("inline bytes have one budget per response and are never stored in the action cache (M6)", async () => {
    const root = await putDirectory(h.cas, {});
    const script = "for f in a b c; do head -c 614400 /dev/zero > $f; done; head -c 614400 /dev/zero";
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", script], env: { PATH: bin }, outputFiles: ["a", "b", "c"] }, root, { salt: salt() });
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true, inlineOutputFiles: ["a", "b", "c"] }));
    const r = res.result!;
    expect(r.outputFiles).toHaveLength(3);
    const inlined = r.stdoutRaw.byteLength + r.outputFiles.reduce((n, f) => n + f.contents.byteLength, 0);
    expect(inlined).toBeGreaterThan(0);
    expect(inlined).toBeLessThanOrEqual(1024 * 1024);
    const stored = (await h.ac.get("", actionDigest))!.result;
    expect(stored.stdoutRaw.byteLength).toBe(0);
    expect(stored.outputFiles.map((f) => f.contents.byteLength)).toEqual([0, 0, 0]);
  });

  test("a path only in output_files that the action made a directory fails the action, uncached (L5)", async () => {
    const root = await putDirectory(h.cas, {});
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "mkdir out"], env: { PATH: bin }, outputFiles: ["out"] }, root, { salt: salt() });
    const res = lastResponse(await h.clients.execute({ actionDigest }));
    expect(res.status?.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(res.result!.outputDirectories).toEqual([]);
    expect(await h.ac.get("", actionDigest)).toBeUndefined();
  });

  test("stdout over the cap: RESOURCE_EXHAUSTED naming the cap, the stdout up to it stored, nothing cached", async () => {
    const cap = 64 * 1024;
    const capped = await startExecHarness({ maxStdStreamBytes: cap });
    try {
      const root = await putDirectory(capped.cas, {});
      const actionDigest = await putAction(
        capped.cas,
        { argv: [sh, "-c", "echo to stderr >&2; head -c 1000000 /dev/zero | tr '\\0' a; sleep 30"], env: { PATH: bin } },
        root,
        { salt: salt() },
      );
      const res = lastResponse(await capped.clients.execute({ actionDigest }));
      expect(res.status?.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
      expect(res.message).toContain(`more than ${cap} bytes to stdout or stderr`);
      const out = res.result!.stdoutDigest!;
      expect(out.sizeBytes).toBe(cap);
      expect(Buffer.from(await capped.cas.get({ fn: "sha256", hash: out.hash, sizeBytes: out.sizeBytes })).equals(Buffer.alloc(cap, "a"))).toBe(true);
      const err = res.result!.stderrDigest!;
      expect(new TextDecoder().decode(await capped.cas.get({ fn: "sha256", hash: err.hash, sizeBytes: err.sizeBytes }))).toBe("to stderr\n");
      expect(await capped.ac.get("", actionDigest)).toBeUndefined();
    } finally {
      await capped.close();
    }
  }, 30_000);

  test("a do_not_cache action is never answered from the action cache (L6)", async () => {
    const root = await putDirectory(h.cas, {});
    const actionDigest = await putAction(h.cas, { argv: [sh, "-c", "echo fresh"], env: { PATH: bin } }, root, { salt: salt(), doNotCache: true });
    const stale = ActionResult.fromPartial({ exitCode: 0, stdoutDigest: toWire(await putBytes(h.cas, "stale\n")) });
    await h.ac.put("", actionDigest, { result: stale, origin: "client" });
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.cachedResult).toBe(false);
    expect(res.result!.stdoutRaw.toString()).toBe("fresh\n");
  });
});

/**
 * The executor, with one fault injected on purpose: the next prepare is held
 * after it finished, until the test lets it go. Everything else is the real
 * executor; `runs` counts the actions that really ran.
 */
function holdingExecutor() {
  let next: { reached: () => void; released: Promise<void> } | undefined;
  let runs = 0;
  return {
    runs: () => runs,
    /** Holds the next prepare; `reached` settles once it is held. */
    holdNextPrepare(): { reached: Promise<void>; release: () => void } {
      let reached!: () => void;
      let release!: () => void;
      const reachedP = new Promise<void>((r) => (reached = r));
      next = { reached, released: new Promise<void>((r) => (release = r)) };
      return { reached: reachedP, release };
    },
    wrap: (inner: LocalExecutor): ActionExecutor => ({
      prepare: async (task) => {
        const prepared = await inner.prepare(task);
        const held = next;
        next = undefined;
        if (held !== undefined) {
          held.reached();
          await held.released;
        }
        return prepared;
      },
      execute: (prepared, hooks) => {
        runs++;
        return inner.execute(prepared, hooks);
      },
      queued: (prepared) => inner.queued(prepared),
      discard: (prepared) => inner.discard(prepared),
      currentDefaultClosureHash: () => inner.currentDefaultClosureHash(),
    }),
  };
}

describe("Execute: in-flight deduplication", () => {
  test("an identical action that finished while this one was being prepared answers it from the cache: it runs once", async () => {
    const gate = holdingExecutor();
    const d = await startExecHarness({ wrapExecutor: gate.wrap });
    try {
      const root = await putDirectory(d.cas, {});
      const actionDigest = await putAction(d.cas, { argv: [sh, "-c", "echo ran"], env: { PATH: bin } }, root, { salt: salt() });
      const held = gate.holdNextPrepare();
      const early = d.clients.execute({ actionDigest, inlineStdout: true });
      await held.reached; // its cache lookup missed; it is prepared but not yet submitted
      const other = lastResponse(await d.clients.execute({ actionDigest }));
      expect(other.cachedResult).toBe(false);
      expect(gate.runs()).toBe(1);
      held.release();
      const res = lastResponse(await early);
      expect(res.cachedResult).toBe(true);
      expect(res.status?.code ?? 0).toBe(0);
      expect(res.result!.stdoutDigest).toEqual(other.result!.stdoutDigest);
      expect(gate.runs()).toBe(1);
    } finally {
      await d.close();
    }
  });

  test("with skip_cache_lookup the action runs again even so", async () => {
    const gate = holdingExecutor();
    const d = await startExecHarness({ wrapExecutor: gate.wrap });
    try {
      const root = await putDirectory(d.cas, {});
      const actionDigest = await putAction(d.cas, { argv: [sh, "-c", "echo ran"], env: { PATH: bin } }, root, { salt: salt() });
      const held = gate.holdNextPrepare();
      const early = d.clients.execute({ actionDigest, skipCacheLookup: true });
      await held.reached;
      lastResponse(await d.clients.execute({ actionDigest }));
      held.release();
      expect(lastResponse(await early).cachedResult).toBe(false);
      expect(gate.runs()).toBe(2);
    } finally {
      await d.close();
    }
  });
});

describe("Execute: closure roots", () => {
  const storeListing = (paths: readonly string[]) => paths.map((p) => p.slice("/nix/store/".length)).sort().join("\n") + "\n";

  test("without nix-closure, the server's default and the store paths argv names are both visible", async () => {
    const root = await putDirectory(h.cas, {});
    // A bare `sh` (found through the default closure's PATH) reading a file of a path only argv names.
    const actionDigest = await putAction(h.cas, { argv: ["sh", "-c", `cat ${h.toolchain.outsider}/secret; ls /nix/store`] }, root, { salt: salt() });
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result!.exitCode).toBe(0);
    const [secret, ...listing] = res.result!.stdoutRaw.toString().split(/(?<=\n)/);
    expect(secret).toBe("outsider: must stay invisible\n");
    expect(listing.join("")).toBe(storeListing([h.toolchain.toolchainA, h.toolchain.busybox, h.toolchain.outsider]));
    // The default took part, so the result records it, and it is a hit while the default is unchanged.
    const recorded = await h.ac.get("", actionDigest);
    expect(recorded?.closureHash).toBeDefined();
    expect(recorded?.closureHash).toBe(h.executor.currentDefaultClosureHash()!);
    expect(lastResponse(await h.clients.execute({ actionDigest })).cachedResult).toBe(true);
  });

  for (const where of ["Action", "Command"] as const) {
    test(`a nix-closure declared on the ${where} replaces the server's default (named paths still join)`, async () => {
      const root = await putDirectory(h.cas, {});
      const platform = { "nix-closure": h.toolchain.busybox };
      const actionDigest = await putAction(
        h.cas,
        { argv: [`${h.toolchain.busybox}/bin/sh`, "-c", `ls /nix/store; cat ${h.toolchain.outsider}/secret`], ...(where === "Command" ? { platform } : {}) },
        root,
        { salt: salt(), ...(where === "Action" ? { platform } : {}) },
      );
      const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
      expect(res.result!.exitCode).toBe(0);
      // Not toolchainA, the harness's default.
      expect(res.result!.stdoutRaw.toString()).toBe(storeListing([h.toolchain.busybox, h.toolchain.outsider]) + "outsider: must stay invisible\n");
      // Everything the sandbox saw is in the action digest: nothing to record.
      expect((await h.ac.get("", actionDigest))?.closureHash).toBeUndefined();
    });
  }

  for (const bad of ["/nix/store/garbage", "/nix/store/abc-../x", "/usr/bin"]) {
    test(`a nix-closure entry ${JSON.stringify(bad)} is FAILED_PRECONDITION naming it and saying what a store path looks like`, async () => {
      const root = await putDirectory(h.cas, {});
      const actionDigest = await putAction(
        h.cas,
        { argv: [sh, "-c", "true"], platform: { "nix-closure": `${h.toolchain.toolchainA} ${bad}` } },
        root,
        { salt: salt() },
      );
      const err = await rpcError(h.clients.execute({ actionDigest }));
      expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(err.details).toContain(`"nix-closure" lists "${bad}", which is not a Nix store path`);
      expect(err.details).toContain("/nix/store/<32-character hash>-<name>");
    });
  }
});

describe("Execute: the server's default closure is part of what a cached result means (H2)", () => {
  test("after a restart with another --closure, results of actions that used the default are misses in Execute and GetActionResult", async () => {
    const cas = new MemoryBlobStore();
    const ac = new MemoryActionCache();
    const first = await startExecHarness({ cas, ac, defaultClosureRoots: [h.toolchain.toolchainA] });
    let defaultUser: Digest;
    let declared: Digest;
    try {
      const root = await putDirectory(cas, {});
      defaultUser = await putAction(cas, { argv: ["sh", "-c", "echo $PATH"] }, root, { salt: salt() });
      declared = await putAction(cas, { argv: ["sh", "-c", "echo declared"], platform: { "nix-closure": first.toolchain.toolchainA } }, root, { salt: salt() });
      for (const a of [defaultUser, declared]) expect(lastResponse(await first.clients.execute({ actionDigest: a })).result!.exitCode).toBe(0);
      expect(lastResponse(await first.clients.execute({ actionDigest: defaultUser })).cachedResult).toBe(true);
      await first.clients.getActionResult({ actionDigest: toWire(defaultUser) });
    } finally {
      await first.close();
    }

    const second = await startExecHarness({ cas, ac, defaultClosureRoots: [h.toolchain.toolchainB] });
    try {
      expect((await rpcError(second.clients.getActionResult({ actionDigest: toWire(defaultUser) }))).code).toBe(GrpcCode.NOT_FOUND);
      const rerun = lastResponse(await second.clients.execute({ actionDigest: defaultUser, inlineStdout: true }));
      expect(rerun.cachedResult).toBe(false);
      expect(rerun.result!.stdoutRaw.toString()).toContain(second.toolchain.toolchainB);
      // Declared closures are in the action digest already: those results stay valid.
      expect(lastResponse(await second.clients.execute({ actionDigest: declared })).cachedResult).toBe(true);
      await second.clients.getActionResult({ actionDigest: toWire(declared) });
    } finally {
      await second.close();
    }
  }, 60_000);
});

describe("disk use outside the CAS (H3)", () => {
  test("collection keeps the file cache within its budget and only the most recent closure views, sparing what running actions hold", async () => {
    const c = await startExecHarness({});
    try {
      const root = await putDirectory(c.cas, {
        files: await Promise.all(["a", "b", "c", "d"].map(async (name) => ({ name, digest: await putBytes(c.cas, name.repeat(10_000)) }))),
      });
      const quick = await putAction(c.cas, { argv: [sh, "-c", "true"] }, root, { salt: salt() });
      lastResponse(await c.clients.execute({ actionDigest: quick }));
      const filecache = join(c.dataDir, "filecache");
      expect(readdirSync(filecache).length).toBe(4);

      // Views of closures nobody uses any more, oldest first.
      const viewsDir = join(c.dataDir, "closures");
      for (let i = 0; i < 5; i++) {
        const v = join(viewsDir, `old-view-${i}`);
        mkdirSync(v, { recursive: true });
        utimesSync(v, 1_600_000_000 + i, 1_600_000_000 + i);
      }
      const running = await putAction(c.cas, { argv: [sh, "-c", "sleep 1.5"] }, root, { salt: salt() });
      const pending = c.clients.execute({ actionDigest: running });
      await Bun.sleep(700); // staged and running

      const collection = startDiskCollection(c.executor, { fileCacheBytes: 15_000, viewsDir, keepViews: 2, viewMinIdleMs: 0, intervalMs: 3_600_000 });
      await collection.collectNow();
      // Held by the running action: all four stay although they exceed the budget.
      expect(readdirSync(filecache).length).toBe(4);
      // Two kept: the running action's view (most recently used) and the newest old one.
      const views = readdirSync(viewsDir).filter((v) => !v.startsWith("."));
      expect(views.filter((v) => v.startsWith("old-view-"))).toEqual(["old-view-4"]);
      expect(views).toHaveLength(2);
      lastResponse(await pending);
      await collection.collectNow();
      collection.stop();
      expect(readdirSync(filecache).length).toBe(1);
    } finally {
      await c.close();
    }
  }, 60_000);

  test("temp files of writes cut short by a crash are removed at startup", async () => {
    const dataDir = join(h.dir, "crashed");
    mkdirSync(join(dataDir, "filecache"), { recursive: true });
    writeFileSync(join(dataDir, "filecache", ".tmp-123-1-abcdef"), "half a blob");
    await createLocalExecution({ cas: new MemoryBlobStore(), dataDir, jobs: 1, defaultClosureRoots: [], closureViewOptions: { viewsDir: join(dataDir, "views") } });
    expect(existsSync(join(dataDir, "filecache", ".tmp-123-1-abcdef"))).toBe(false);
  });
});
