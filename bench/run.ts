/**
 * `npm run bench`: runs every bench/*.bench.ts in its own process (so one
 * bench's memory or open servers cannot skew the next), then prints one table
 * from the JSON files they wrote to bench/results/. `--quick` makes each bench
 * do a token amount of work; the test suite uses it to prove benches still run.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type BenchResult, formatTable } from "./lib/harness";

const dir = import.meta.dir;
const only = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const passthrough = process.argv.slice(2).filter((a) => a.startsWith("--"));
const benches = readdirSync(dir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => only.length === 0 || only.some((o) => f.startsWith(o)))
  .sort();

const results: BenchResult[] = [];
let failed = 0;
for (const file of benches) {
  const name = file.replace(/\.bench\.ts$/, "");
  console.error(`bench: running ${name}`);
  const proc = Bun.spawnSync([process.execPath, join(dir, file), ...passthrough], { stdout: "inherit", stderr: "inherit" });
  if (proc.exitCode !== 0) {
    console.error(`bench: ${name} failed with exit code ${proc.exitCode}`);
    failed++;
    continue;
  }
  results.push(JSON.parse(readFileSync(join(dir, "results", `${name}.json`), "utf8")) as BenchResult);
}
console.log(formatTable(results));
process.exit(failed === 0 ? 0 : 1);
