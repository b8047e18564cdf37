/**
 * Compiles src/main.ts into one self-contained executable, dist/lre (or the
 * path after --outfile). Run with the pinned Bun: `npm run build`.
 */
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { nativeAddonsPlugin } from "./native-addons-plugin";

const root = join(import.meta.dir, "..");
const at = process.argv.indexOf("--outfile");
const outfile = at > 0 && process.argv[at + 1] !== undefined ? resolve(process.argv[at + 1] as string) : join(root, "dist", "lre");

// The plugin embeds the addons built for the machine running the build, so a
// cross build would ship the wrong ones.
if (process.platform !== "linux" || process.arch !== "x64") {
  console.error(`lre builds only on x86_64 Linux (this is ${process.platform}/${process.arch})`);
  process.exit(1);
}

mkdirSync(dirname(outfile), { recursive: true });

const result = await Bun.build({
  entrypoints: [join(root, "src", "main.ts")],
  compile: { target: "bun-linux-x64", outfile },
  minify: false,
  // Linked maps would be a second file to ship; stack traces name bundle lines instead.
  sourcemap: "none",
  plugins: [nativeAddonsPlugin()],
});

if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built ${outfile}`);
