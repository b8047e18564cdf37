/**
 * Benches still run: `bun bench/run.ts --quick` runs every bench/*.bench.ts
 * with a token workload, and each must leave a well-formed result. Timing
 * goals live in the benches themselves; nothing here judges a number.
 *
 * The run overwrites bench/results/*.json with quick figures, so the files as
 * they were before (full runs someone committed) are put back afterwards.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { BenchResult } from "../../bench/lib/harness";

const REPO = resolve(import.meta.dir, "..", "..");
const BENCH = join(REPO, "bench");
const RESULTS = join(BENCH, "results");
const BUN = join(REPO, "node_modules", ".bin", "bun");

const benches = readdirSync(BENCH)
  .filter((f) => f.endsWith(".bench.ts"))
  .map((f) => f.replace(/\.bench\.ts$/, ""))
  .sort();

const saved = new Map<string, string | undefined>(
  benches.map((b) => {
    const path = join(RESULTS, `${b}.json`);
    return [path, existsSync(path) ? readFileSync(path, "utf8") : undefined];
  }),
);

afterAll(() => {
  for (const [path, text] of saved) {
    if (text === undefined) rmSync(path, { force: true });
    else writeFileSync(path, text);
  }
});

const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x);
const isText = (x: unknown): x is string => typeof x === "string" && x.length > 0;

/** Every way a result file can be malformed, as readable strings (empty when it is fine). */
function problemsOf(name: string, r: BenchResult, startedAfter: number): string[] {
  const p: string[] = [];
  if (r.bench !== name) p.push(`bench is "${r.bench}"`);
  if (r.quick !== true) p.push("quick is not true");
  if (!(Date.parse(r.startedAt) >= startedAfter - 1000)) p.push(`startedAt ${r.startedAt} is not from this run`);
  const m = r.machine as Partial<BenchResult["machine"]> | undefined;
  if (!(isNum(m?.cores) && m.cores > 0) || !isText(m?.cpu) || !isText(m?.bun) || !isText(m?.platform)) p.push(`machine is ${JSON.stringify(m)}`);
  if (!Array.isArray(r.figures) || r.figures.length === 0) p.push("no figures");
  for (const f of r.figures ?? []) {
    const at = `figure "${String(f.name)}"`;
    if (!isText(f.name)) p.push(`${at}: no name`);
    if (!isNum(f.value)) p.push(`${at}: value ${String(f.value)} is not a finite number`);
    if (!isText(f.unit)) p.push(`${at}: no unit`);
    if (f.baseline !== undefined && (!isText(f.baseline.name) || !isNum(f.baseline.value))) p.push(`${at}: baseline ${JSON.stringify(f.baseline)}`);
    if (f.goal !== undefined && (!(f.goal.op === ">=" || f.goal.op === "<=") || !isNum(f.goal.target) || !(f.goal.of === "ratio" || f.goal.of === "value"))) {
      p.push(`${at}: goal ${JSON.stringify(f.goal)}`);
    }
    if (f.goal?.of === "ratio" && f.baseline === undefined) p.push(`${at}: a ratio goal without a baseline`);
  }
  return p;
}

test(
  "every bench runs in --quick mode and writes a well-formed result",
  async () => {
    expect(benches).toContain("cas");
    const started = Date.now();
    const proc = Bun.spawn([BUN, join(BENCH, "run.ts"), "--quick"], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
    const killer = setTimeout(() => proc.kill("SIGKILL"), 240_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(killer);
    if (code !== 0) throw new Error(`bench/run.ts --quick exited with ${code}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`);

    const problems: string[] = [];
    for (const name of benches) {
      const path = join(RESULTS, `${name}.json`);
      if (!existsSync(path)) {
        problems.push(`${name}: wrote no ${path}`);
        continue;
      }
      let r: BenchResult;
      try {
        r = JSON.parse(readFileSync(path, "utf8")) as BenchResult;
      } catch (err) {
        problems.push(`${name}: result is not JSON (${String(err)})`);
        continue;
      }
      problems.push(...problemsOf(name, r, started).map((x) => `${name}: ${x}`));
      // The summary table names every bench that ran.
      if (!stdout.includes(`| ${name} `)) problems.push(`${name}: missing from the printed table`);
    }
    expect(problems).toEqual([]);
  },
  250_000,
);
