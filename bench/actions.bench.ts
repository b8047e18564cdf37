/**
 * Per-action costs of lre's executor, each beside a baseline from the same run:
 *
 * - Sandbox overhead: wall time of a trivial action (busybox `true`) through
 *   runSandboxed (closure view at /nix/store, own netns, seccomp, pids cgroup:
 *   what the executor uses) with closures of 1, 100 and 1,000 real store
 *   paths, against a bare Bun.spawn of the same binary, runs interleaved.
 *   Goal: median ≤ 4 ms and p90 ≤ 5 ms above bare spawn, flat in closure size.
 *   The closure view's first build and its steady-state lookup (closure
 *   resolution from Nix's db + ensureClosureView) are reported too.
 * - Execute throughput: trivial actions per second through a real `lre serve`
 *   over its Unix socket (inputs already in the CAS, skip_cache_lookup and
 *   distinct salts so each one runs), from several concurrent clients,
 *   against the bare spawn rate at the same concurrency. Goal ≥ 400/s.
 * - Input staging: 1,000 files of 4 KiB in 50 directories through the
 *   executor's stageInputs (file cache warm), against mkdir + linkSync of the
 *   same cache files. Goal ≤ 5 ms.
 */
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClosureResolver, actionSandboxSpec, ensureClosureView, runSandboxed, toBwrapArgs } from "../sandbox/mod";
import type { Closure, SandboxSpec } from "../sandbox/spec";
import type { Digest } from "../src/digest/digest";
import { toWire } from "../src/digest/digest";
import { digestOf } from "../src/digest/hasher";
import { CacheLease, FileCache } from "../src/exec/file-cache";
import type { InputTree } from "../src/exec/input-tree";
import { removeTree } from "../src/exec/local-executor";
import { type StagedInputs, stageInputs, unlinkSharedInputs } from "../src/exec/stage-inputs";
import { Action, Command, Directory } from "../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { openStorage } from "../src/storage/open-storage";
import { createClients, type ReapiClients } from "../test/support/grpc-client";
import { startLre } from "../test/support/lre-server";
import { ensureNixToolchain } from "../test/support/nix-fixture";
import { type Figure, formatTable, isQuick, median, writeResult } from "./lib/harness";
import { percentile, timeMs } from "./lib/percentile";
import { ensureSyntheticClosure } from "./lib/synthetic-closure";

const quick = isQuick();
const figures: Figure[] = [];
const work = mkdtempSync(join(tmpdir(), "lre-bench-actions-"));
// Views must share a filesystem with /nix/store (hardlinks); a fresh dir per
// run so "first build" really builds.
const viewsDir = join("/nix/var/lre/bench-views", `${process.pid}-${Date.now()}`);

const nix = await ensureNixToolchain();
const TRUE = `${nix.busybox}/bin/true`;

// --- 1. sandbox overhead by closure size ---------------------------------------

/** Bare spawn of the same binary: the baseline every sandbox figure is set against. */
async function bareSpawn(): Promise<number> {
  return timeMs(async () => {
    const p = Bun.spawn([TRUE], { stdio: ["ignore", "ignore", "ignore"] });
    if ((await p.exited) !== 0) throw new Error("bare `true` failed");
  });
}

/** The executor's sandbox for a trivial action: `true` with closure view `view` and input root `dir`. */
function trueSpec(view: string, dir: string): SandboxSpec {
  return actionSandboxSpec({ closureView: view, inputRoot: dir, argv: [TRUE], env: {} });
}

/** trueSpec as a bwrap command line, for bwrap started with nothing of lre around it. */
function bwrapAloneArgvFor(view: string, dir: string): string[] {
  return ["bwrap", ...toBwrapArgs(trueSpec(view, dir))];
}

async function sandboxedRun(view: string, dir: string): Promise<number> {
  const spec = trueSpec(view, dir);
  return timeMs(async () => {
    const r = await runSandboxed(spec, { stdoutPath: join(dir, "..", "stdout"), stderrPath: join(dir, "..", "stderr"), timeoutMs: 30_000 });
    if (r.exitCode !== 0) throw new Error(`sandboxed \`true\` exited ${r.exitCode}`);
  });
}

/**
 * The same sandbox started by bwrap alone (same argv, no seccomp filter, no
 * pids cgroup, no status pipe, no output pumping): the floor that kernel
 * namespaces set on this machine, so the figures can show what lre adds.
 */
async function bwrapAloneRun(view: string, dir: string): Promise<number> {
  const argv = bwrapAloneArgvFor(view, dir);
  return timeMs(async () => {
    const p = Bun.spawn(argv, { stdio: ["ignore", "ignore", "ignore"] });
    if ((await p.exited) !== 0) throw new Error("bwrap alone: `true` failed");
  });
}

const resolver = new ClosureResolver();
const sizes = [1, 100, 1000];
const runsPerSize = quick ? 5 : 200;
const overheadBySize = new Map<number, number>();
for (const size of sizes) {
  const roots = size === 1 ? [nix.busybox] : [ensureSyntheticClosure(nix.busybox, size)];
  const closure: Closure = resolver.resolve(roots);
  if (closure.paths.length !== size) throw new Error(`closure of ${roots[0]} has ${closure.paths.length} paths, expected ${size}`);

  const firstBuild = await timeMs(() => ensureClosureView(closure, { viewsDir }));
  // Steady state: what every later action with this closure pays before spawning.
  const lookups: number[] = [];
  for (let i = 0; i < (quick ? 5 : 200); i++) {
    lookups.push(await timeMs(() => ensureClosureView(resolver.resolve(roots), { viewsDir })));
  }
  const view = await ensureClosureView(closure, { viewsDir });

  const dir = join(work, `sandbox-${size}`, "root");
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < 3; i++) {
    await bareSpawn();
    await sandboxedRun(view, dir);
  }
  const bare: number[] = [];
  const boxed: number[] = [];
  const alone: number[] = [];
  for (let i = 0; i < runsPerSize; i++) {
    bare.push(await bareSpawn());
    boxed.push(await sandboxedRun(view, dir));
    alone.push(await bwrapAloneRun(view, dir));
  }
  const bareMed = median(bare);
  const overhead = median(boxed) - bareMed;
  const overheadP90 = percentile(boxed, 90) - percentile(bare, 90);
  overheadBySize.set(size, median(boxed));
  const base = { name: "bare spawn", value: bareMed };
  figures.push({ name: `sandbox overhead p50, closure ${size}`, value: overhead, unit: "ms", baseline: base, goal: { op: "<=", target: 4, of: "value" } });
  figures.push({
    name: `sandbox overhead p90, closure ${size}`,
    value: overheadP90,
    unit: "ms",
    baseline: { name: "bare spawn p90", value: percentile(bare, 90) },
    goal: { op: "<=", target: 5, of: "value" },
  });
  figures.push({
    name: `bwrap alone (same isolation) above bare spawn p50, closure ${size}`,
    value: median(alone) - bareMed,
    unit: "ms",
    baseline: base,
  });
  figures.push({
    name: `lre sandbox above bwrap alone p50, closure ${size}`,
    value: median(boxed) - median(alone),
    unit: "ms",
    baseline: { name: "bwrap alone", value: median(alone) },
  });
  figures.push({ name: `closure view first build, closure ${size}`, value: firstBuild, unit: "ms", baseline: base });
  figures.push({ name: `closure resolve + view lookup, closure ${size}`, value: median(lookups), unit: "ms", baseline: base, goal: { op: "<=", target: 0.5, of: "value" } });
}
figures.push({
  name: "sandboxed run, closure 1,000",
  value: overheadBySize.get(1000)!,
  unit: "ms",
  baseline: { name: "closure 1", value: overheadBySize.get(1)! },
  goal: { op: "<=", target: 1.15, of: "ratio" },
});

// --- 2. Execute throughput through lre serve -----------------------------------

const CLIENTS = 4;
const ACTIONS = quick ? 16 : 1200;

/** Spawns of `argv` at CLIENTS-way concurrency, per second. */
async function spawnRate(argv: readonly string[], total: number): Promise<number> {
  let next = 0;
  const start = Bun.nanoseconds();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next++ < total) {
        const p = Bun.spawn([...argv], { stdio: ["ignore", "ignore", "ignore"] });
        if ((await p.exited) !== 0) throw new Error(`${argv[0]} failed`);
      }
    }),
  );
  return total / ((Bun.nanoseconds() - start) / 1e9);
}

const bareRate = (total: number): Promise<number> => spawnRate([TRUE], total);

// What the executor's sandbox costs with nothing of lre around it: the ceiling
// for Execute throughput on this kernel (namespace setup and teardown dominate).
const rateView = await ensureClosureView(resolver.resolve([nix.busybox]), { viewsDir });
const rateRoot = join(work, "rate-root");
mkdirSync(rateRoot, { recursive: true });
const bwrapAloneArgv = bwrapAloneArgvFor(rateView, rateRoot);
const bwrapRate = (total: number): Promise<number> => spawnRate(bwrapAloneArgv, total);

async function uploadAll(c: ReapiClients, blobs: readonly Uint8Array[]): Promise<Digest[]> {
  const digests = blobs.map((b) => digestOf("sha256", b));
  for (let i = 0; i < blobs.length; i += 500) {
    const res = await c.batchUpdateBlobs({
      requests: blobs.slice(i, i + 500).map((data, j) => ({ digest: toWire(digests[i + j]!), data: Buffer.from(data) })),
    });
    const bad = res.responses.find((r) => (r.status?.code ?? 0) !== 0);
    if (bad) throw new Error(`upload failed: ${bad.status?.message}`);
  }
  return digests;
}

const lre = await startLre();
try {
  const clients = Array.from({ length: CLIENTS }, () => createClients(lre.socketPath));
  const setup = clients[0]!;
  // A small input root (two files), already in the CAS before timing starts.
  const fileA = new TextEncoder().encode("input a\n");
  const fileB = new TextEncoder().encode("input b\n");
  const [da, db] = await uploadAll(setup, [fileA, fileB]);
  const rootDir = Directory.encode(
    Directory.fromPartial({
      files: [
        { name: "a.txt", digest: toWire(da!), isExecutable: false },
        { name: "b.txt", digest: toWire(db!), isExecutable: false },
      ],
    }),
  ).finish();
  const cmd = Command.encode(Command.fromPartial({ arguments: [TRUE] })).finish();
  const [rootDigest, cmdDigest] = await uploadAll(setup, [rootDir, cmd]);
  const runBatch = async (n: number, tag: string): Promise<number> => {
    const actions = Array.from({ length: n }, (_, i) =>
      Action.encode(
        Action.fromPartial({ commandDigest: toWire(cmdDigest!), inputRootDigest: toWire(rootDigest!), salt: Buffer.from(`${tag}-${i}`) }),
      ).finish(),
    );
    const digests = await uploadAll(setup, actions);
    let next = 0;
    const start = Bun.nanoseconds();
    await Promise.all(
      clients.map(async (c) => {
        while (next < digests.length) {
          const d = digests[next++]!;
          const ops = await c.execute({ actionDigest: toWire(d), skipCacheLookup: true });
          const last = ops.at(-1);
          if (!last?.done) throw new Error("Execute stream ended before the operation was done");
        }
      }),
    );
    return n / ((Bun.nanoseconds() - start) / 1e9);
  };
  await runBatch(quick ? 4 : 40, `warm-${Date.now()}`);
  // Interleave server batches with bare batches so both see the same machine.
  const rounds = quick ? 1 : 3;
  const lreRates: number[] = [];
  const bareRates: number[] = [];
  const bwrapRates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    lreRates.push(await runBatch(ACTIONS / rounds, `run-${Date.now()}-${r}`));
    bareRates.push(await bareRate(ACTIONS / rounds));
    bwrapRates.push(await bwrapRate(ACTIONS / rounds));
  }
  figures.push({
    name: `Execute trivial actions, ${CLIENTS} clients`,
    value: median(lreRates),
    unit: "actions/s",
    baseline: { name: "bare spawn", value: median(bareRates) },
    goal: { op: ">=", target: 400, of: "value" },
  });
  figures.push({
    name: `Execute trivial actions vs bwrap alone, ${CLIENTS} at a time`,
    value: median(lreRates),
    unit: "actions/s",
    baseline: { name: "bwrap alone (same isolation)", value: median(bwrapRates) },
  });
  for (const c of clients) c.close();
} finally {
  await lre.dispose();
}

// --- 3. staging 1,000 inputs ----------------------------------------------------

const storeDir = join(work, "store");
const storage = await openStorage({ dataDir: storeDir, maxBytes: 1024 * 1024 * 1024 });
try {
  const DIRS = 50;
  const FILES = 1000;
  const directories = Array.from({ length: DIRS }, (_, i) => `d${String(i).padStart(2, "0")}`);
  const files: { path: string; digest: Digest; executable: boolean }[] = [];
  for (let i = 0; i < FILES; i++) {
    const data = new Uint8Array(4096).fill(i % 251);
    new DataView(data.buffer).setUint32(0, i);
    const digest = digestOf("sha256", data);
    await storage.cas.put(digest, data);
    files.push({ path: `${directories[i % DIRS]}/f${i}.txt`, digest, executable: false });
  }
  const tree: InputTree = { directories, files, symlinks: [], fileDigests: files.map((f) => f.digest) };
  const cache = new FileCache(join(work, "filecache"), storage.cas);
  // Warm the file cache: staging in steady state is hardlinks only.
  await stageInputs(tree, join(work, "stage-warm"), [], cache, storage.cas, new CacheLease());
  // The baseline links plain copies: linking the cache entries themselves
  // behind the cache's back would make every staging run re-hash them.
  const plainDir = join(work, "plain");
  mkdirSync(plainDir);
  const cachePaths = files.map((f, i) => {
    const p = join(plainDir, String(i));
    copyFileSync(cache.pathOf(f.digest, false), p);
    return p;
  });

  const runs = quick ? 3 : 30;
  const staged: number[] = [];
  const raw: number[] = [];
  const teardown: number[] = [];
  const rawTeardown: number[] = [];
  for (let i = 0; i < runs; i++) {
    const a = join(work, `stage-${i}`);
    let result: StagedInputs | undefined;
    staged.push(await timeMs(async () => void (result = await stageInputs(tree, a, [], cache, storage.cas, new CacheLease()))));
    const b = join(work, `raw-${i}`);
    raw.push(
      await timeMs(() => {
        mkdirSync(b);
        for (const d of directories) mkdirSync(join(b, d));
        for (let j = 0; j < FILES; j++) linkSync(cachePaths[j]!, join(b, files[j]!.path));
      }),
    );
    // As the executor does it: unlink the shared inputs through the cache, then remove the rest.
    teardown.push(
      await timeMs(async () => {
        await unlinkSharedInputs(a, result!, cache);
        await removeTree(a);
      }),
    );
    rawTeardown.push(await timeMs(() => rmSync(b, { recursive: true, force: true })));
  }
  figures.push({
    name: "stage 1,000 inputs (4 KiB, 50 dirs)",
    value: median(staged),
    unit: "ms",
    baseline: { name: "mkdir + linkSync", value: median(raw) },
    goal: { op: "<=", target: 5, of: "value" },
  });
  figures.push({
    name: "tear down 1,000 staged inputs",
    value: median(teardown),
    unit: "ms",
    baseline: { name: "rmSync", value: median(rawTeardown) },
    goal: { op: "<=", target: 8, of: "value" },
  });
} finally {
  await storage.close();
}

resolver.close();
rmSync(viewsDir, { recursive: true, force: true });
rmSync(work, { recursive: true, force: true });
const result = writeResult("actions", figures);
console.log(formatTable([result]));
