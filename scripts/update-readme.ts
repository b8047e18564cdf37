/**
 * Rewrites the CLI reference in README.md from the command table, between the
 * `cli-reference` markers. test/cli/usage.test.ts fails when README and the
 * table disagree; run `./node_modules/.bin/bun scripts/update-readme.ts` to fix it.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cliReference, README_END, README_START } from "../src/cli/usage";

const path = join(import.meta.dir, "..", "README.md");
const text = readFileSync(path, "utf8");
const start = text.indexOf(README_START);
const end = text.indexOf(README_END);
if (start < 0 || end < start) {
  console.error(`README.md has no "${README_START}" ... "${README_END}" section`);
  process.exit(1);
}
writeFileSync(path, text.slice(0, start) + cliReference() + text.slice(end + README_END.length));
console.log("README.md CLI reference updated");
