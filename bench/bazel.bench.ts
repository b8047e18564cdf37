/**
 * Bazel 4.2.3 building a generated graph of genrules (bench/lib/genrule-graph.ts:
 * 20 layers x 25 wide, each genrule reading 2-3 outputs of the layer before;
 * --quick: 2 x 5), with one Bazel server and the same `--shell_executable`
 * (busybox ash from the Nix fixture) everywhere, so only the strategy differs:
 *
 *  (a) local: `--spawn_strategy=linux-sandbox`, after `bazel clean`;
 *  (b) remote execution through lre (`--remote_executor=unix://…`, fresh data
 *      dir each round, so every action runs), after `bazel clean`;
 *  (c) `--disk_cache=DIR` rebuild after `bazel clean`, the cache populated by
 *      an untimed linux-sandbox build into a fresh DIR just before: all hits;
 *  (d) lre as `--remote_cache=unix://…` (the lre of (b), so it holds every
 *      result) rebuild after `bazel clean`: all hits.
 *
 * Figures: wall time of each `bazel build` (client start to exit, analysis
 * included: each build follows a change of flags, so each pays the same
 * re-analysis), medians over rounds in which a, b, d, c run interleaved;
 * goals b/a <= 1 and d/c <= 1. Bazel's process summary is checked every
 * time: (a) all linux-sandbox, (b) all remote, (c) and (d) all remote cache
 * hits; anything else throws.
 *
 * `--diagnose DIR` runs one round with lre at debug log level, gives every
 * lre build `--experimental_remote_grpc_log` and every build `--profile`,
 * keeps all of them in DIR, and leaves bench/results/bazel.json alone.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { BazelWorkspace, countOf, type BazelResult, type ProcessSummary } from "../test/support/bazel";
import { startLre, type LreServer } from "../test/support/lre-server";
import { ensureNixToolchain } from "../test/support/nix-fixture";
import { genruleGraph } from "./lib/genrule-graph";
import { type Figure, formatTable, isQuick, median, writeResult } from "./lib/harness";

const quick = isQuick();
const diagnoseAt = process.argv.indexOf("--diagnose");
const diagnoseDir = diagnoseAt >= 0 ? resolve(process.argv[diagnoseAt + 1] ?? "bench/_scratch/bazel-diagnose") : undefined;
if (diagnoseDir !== undefined) mkdirSync(diagnoseDir, { recursive: true });
const LAYERS = quick ? 2 : 20;
const WIDTH = quick ? 5 : 25;
const ROUNDS = quick || diagnoseDir !== undefined ? 1 : 3;
/** Two cores: Bazel keeps 4 spawns in flight (local ones are still capped at 2 by its CPU resources); lre runs 2 at once. */
const BAZEL_JOBS = 4;
const LRE_JOBS = 2;


const nix = await ensureNixToolchain();
const graph = genruleGraph({ layers: LAYERS, width: WIDTH });
const N = graph.actions;
const work = mkdtempSync(join(tmpdir(), "lre-bench-bazel-"));

type Expect = "linux-sandbox" | "remote" | "remote cache hit";

/** Throws unless every non-internal action of the build was of the expected kind. */
function checkSummary(label: string, result: BazelResult, kind: Expect): ProcessSummary {
  const s = result.summary;
  if (result.exitCode !== 0 || s === undefined) {
    throw new Error(`${label}: bazel build failed (exit ${result.exitCode})\n--- stderr (end) ---\n${result.stderr.slice(-6000)}`);
  }
  const spawned = s.total - countOf(s, "internal");
  if (countOf(s, kind) !== N || spawned !== N) {
    throw new Error(`${label}: expected all ${N} actions to be "${kind}", Bazel says "${s.line}"\n--- stderr (end) ---\n${result.stderr.slice(-3000)}`);
  }
  return s;
}

const ws = await BazelWorkspace.create({
  files: graph.files,
  buildFlags: [`--shell_executable=${nix.shell}`, `--jobs=${BAZEL_JOBS}`],
});
const lreServers: LreServer[] = [];

async function freshLre(): Promise<LreServer> {
  const lre = await startLre({ args: ["--jobs", String(LRE_JOBS), ...(diagnoseDir === undefined ? [] : ["--log-level", "debug"])] });
  lreServers.push(lre);
  return lre;
}

async function stopLre(lre: LreServer, tag: string): Promise<void> {
  if (diagnoseDir !== undefined) writeFileSync(join(diagnoseDir, `lre-${tag}.log`), lre.output());
  await lre.dispose();
  lreServers.splice(lreServers.indexOf(lre), 1);
}

function diagFlags(tag: string, grpc: boolean): string[] {
  if (diagnoseDir === undefined) return [];
  return [
    `--profile=${join(diagnoseDir, `profile-${tag}.json.gz`)}`,
    ...(grpc ? [`--experimental_remote_grpc_log=${join(diagnoseDir, `grpc-${tag}.log`)}`] : []),
  ];
}

/** `bazel clean`, then one timed build; returns wall ms after checking the summary. */
async function timedBuild(label: string, flags: readonly string[], kind: Expect): Promise<number> {
  await ws.clean();
  const start = Bun.nanoseconds();
  const result = await ws.tryBuild(graph.targets, flags);
  const ms = (Bun.nanoseconds() - start) / 1e6;
  checkSummary(label, result, kind);
  console.error(`bazel bench: ${label}: ${ms.toFixed(0)} ms (${result.summary?.line})`);
  return ms;
}

const LOCAL = ["--spawn_strategy=linux-sandbox"];
const remoteExec = (lre: LreServer): string[] => ["--spawn_strategy=remote", `--remote_executor=${lre.unixUri}`];
const remoteCache = (lre: LreServer): string[] => [...LOCAL, `--remote_cache=${lre.unixUri}`];
const diskCache = (dir: string): string[] => [...LOCAL, `--disk_cache=${dir}`];

const times = { a: [] as number[], b: [] as number[], c: [] as number[], d: [] as number[] };
try {
  // Start the server and load the package; in full mode also one untimed
  // round of (a) and (b) so the JVM is warm for both.
  const warm = await ws.tryBuild(graph.targets, ["--nobuild", ...LOCAL]);
  if (warm.exitCode !== 0) throw new Error(`bazel build --nobuild failed\n${warm.stderr.slice(-6000)}`);
  if (!quick) {
    await timedBuild("warm-up local", LOCAL, "linux-sandbox");
    const lre = await freshLre();
    try {
      await timedBuild("warm-up remote execution", remoteExec(lre), "remote");
    } finally {
      await stopLre(lre, "warm-up");
    }
  }

  for (let round = 0; round < ROUNDS; round++) {
    const r = `round ${round + 1}/${ROUNDS}`;
    times.a.push(await timedBuild(`${r} (a) linux-sandbox`, [...LOCAL, ...diagFlags(`a-${round}`, false)], "linux-sandbox"));

    const lre = await freshLre();
    try {
      times.b.push(await timedBuild(`${r} (b) lre remote execution`, [...remoteExec(lre), ...diagFlags(`b-${round}`, true)], "remote"));
      times.d.push(await timedBuild(`${r} (d) lre remote cache hits`, [...remoteCache(lre), ...diagFlags(`d-${round}`, true)], "remote cache hit"));
    } finally {
      await stopLre(lre, `r${round}`);
    }

    const disk = join(work, `disk-cache-${round}`);
    await timedBuild(`${r} (c) populate disk cache`, diskCache(disk), "linux-sandbox");
    times.c.push(await timedBuild(`${r} (c) disk cache hits`, [...diskCache(disk), ...diagFlags(`c-${round}`, false)], "remote cache hit"));
    rmSync(disk, { recursive: true, force: true });
  }
} finally {
  try {
    await ws.dispose();
  } finally {
    for (const lre of [...lreServers]) await lre.dispose();
    rmSync(work, { recursive: true, force: true });
  }
}

const a = median(times.a);
const b = median(times.b);
const c = median(times.c);
const d = median(times.d);
const what = `${N} genrules (${LAYERS}x${WIDTH})`;
const figures: Figure[] = [
  { name: `(a) linux-sandbox build, ${what}`, value: a, unit: "ms" },
  {
    name: `(b) lre remote execution build, ${what}`,
    value: b,
    unit: "ms",
    baseline: { name: "(a) linux-sandbox", value: a },
    goal: { op: "<=", target: 1.0, of: "ratio" },
  },
  { name: `(c) --disk_cache rebuild, all hits, ${what}`, value: c, unit: "ms", baseline: { name: "(a) linux-sandbox", value: a } },
  {
    name: `(d) lre --remote_cache rebuild, all hits, ${what}`,
    value: d,
    unit: "ms",
    baseline: { name: "(c) --disk_cache", value: c },
    goal: { op: "<=", target: 1.0, of: "ratio" },
  },
];
if (diagnoseDir === undefined) {
  console.log(formatTable([writeResult("bazel", figures)]));
} else {
  // Debug logging and profiles distort the figures: report them, never record them.
  console.log(formatTable([{ bench: "bazel", startedAt: new Date().toISOString(), machine: { cores: 0, cpu: "", bun: Bun.version, platform: "" }, quick, figures }]));
  console.error(`bazel bench: diagnostics in ${diagnoseDir}; bench/results/bazel.json left as it was`);
}
