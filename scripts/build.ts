/**
 * Compiles src/main.ts into one self-contained executable, dist/lre.
 * Run with the pinned Bun: `npm run build`.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { nativeAddonsPlugin } from "./native-addons-plugin";

const root = join(import.meta.dir, "..");
const outfile = join(root, "dist", "lre");

// The plugin embeds the addons built for the machine running the build, so a
// cross build would ship the wrong ones.
if (process.platform !== "linux" || process.arch !== "x64") {
  console.error(`lre builds only on x86_64 Linux (this is ${process.platform}/${process.arch})`);
  process.exit(1);
}

mkdirSync(join(root, "dist"), { recursive: true });

const result = await Bun.build({
  entrypoints: [join(root, "src", "main.ts")],
  compile: { target: "bun-linux-x64", outfile },
  minify: false,
  sourcemap: "inline",
  plugins: [nativeAddonsPlugin()],
});

if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built ${outfile}`);
