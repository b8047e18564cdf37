/**
 * Shared bench plumbing. Machines here are shared and noisy, so every figure
 * is a median of several runs and is reported beside a baseline measured in
 * the same run, as a ratio; absolute numbers alone mean little.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";

export interface Figure {
  /** What was measured, e.g. "sha256 1 MiB". */
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  /** The same-run reference this figure is compared against. */
  readonly baseline?: { readonly name: string; readonly value: number };
  /** The goal for value / baseline.value (or for value when there is no baseline). */
  readonly goal?: { readonly op: ">=" | "<="; readonly target: number; readonly of: "ratio" | "value" };
}

export interface BenchResult {
  readonly bench: string;
  readonly startedAt: string;
  readonly machine: { readonly cores: number; readonly cpu: string; readonly bun: string; readonly platform: string };
  readonly quick: boolean;
  readonly figures: readonly Figure[];
}

export function isQuick(): boolean {
  return process.argv.includes("--quick") || process.env.LRE_BENCH_QUICK === "1";
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new RangeError("median of no samples");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Runs `fn` `runs` times and returns the median of what it reports. */
export async function medianOf(runs: number, fn: () => Promise<number> | number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(await fn());
  return median(samples);
}

export function ratio(f: Figure): number | undefined {
  return f.baseline === undefined || f.baseline.value === 0 ? undefined : f.value / f.baseline.value;
}

export function goalMet(f: Figure): boolean | undefined {
  if (f.goal === undefined) return undefined;
  const x = f.goal.of === "ratio" ? ratio(f) : f.value;
  if (x === undefined) return undefined;
  return f.goal.op === ">=" ? x >= f.goal.target : x <= f.goal.target;
}

export function writeResult(bench: string, figures: readonly Figure[], dir = join(import.meta.dir, "..", "results")): BenchResult {
  const result: BenchResult = {
    bench,
    startedAt: new Date().toISOString(),
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? "unknown", bun: Bun.version, platform: `${process.platform}-${process.arch}` },
    quick: isQuick(),
    figures,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${bench}.json`), JSON.stringify(result, null, 2) + "\n");
  return result;
}

export function formatTable(results: readonly BenchResult[]): string {
  const rows: string[][] = [["bench", "figure", "value", "baseline", "ratio", "goal", "met"]];
  for (const r of results) {
    for (const f of r.figures) {
      const q = ratio(f);
      const met = goalMet(f);
      rows.push([
        r.bench,
        f.name,
        `${fmt(f.value)} ${f.unit}`,
        f.baseline ? `${f.baseline.name} ${fmt(f.baseline.value)}` : "",
        q === undefined ? "" : q.toFixed(2),
        f.goal ? `${f.goal.of} ${f.goal.op} ${f.goal.target}` : "",
        met === undefined ? "" : met ? "yes" : "NO",
      ]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(rows[0]!), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n");
}

function fmt(x: number): string {
  if (x >= 100) return Math.round(x).toLocaleString("en-US");
  return x.toPrecision(3);
}
