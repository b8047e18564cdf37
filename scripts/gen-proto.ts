/**
 * Regenerates src/proto from our own .proto files in proto/ with buf and
 * ts-proto (settings in buf.gen.yaml). The output is checked in, so building
 * lre needs neither tool; run this after editing a .proto file.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const out = join(root, "src", "proto");

// Start clean so messages removed from proto/ do not linger as stale files.
rmSync(join(out, "build"), { recursive: true, force: true });
rmSync(join(out, "google"), { recursive: true, force: true });

const r = Bun.spawnSync([join(root, "node_modules", ".bin", "buf"), "generate"], { cwd: root, stdout: "inherit", stderr: "inherit" });
if (r.exitCode !== 0) {
  console.error("buf generate failed; see above");
  process.exit(1);
}
console.log(`regenerated ${out}`);
