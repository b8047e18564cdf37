/**
 * Real Nix store closures of a chosen size for benches, made offline and
 * cheaply: N - 2 one-line files added with `builtins.toFile`, plus one more
 * `toFile` root whose text names each of them and the fixture's busybox.
 * Nix records a reference for every store path a toFile text mentions, so
 * the root's closure is exactly N paths (root + busybox + leaves) and the
 * busybox applets are there to run. No derivation is built: evaluation alone
 * adds the files, which takes well under a second even for N = 1,000.
 *
 * Roots are registered under /nix/var/nix/gcroots/lre-bench and recorded in a
 * marker file, so later runs reuse them and a garbage collection elsewhere
 * does not remove them. Needs root and a local store, like the test fixture.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const STATE_DIR = "/nix/var/lre/bench-fixture";
const GC_ROOTS = "/nix/var/nix/gcroots/lre-bench";
/** Bump when the expression changes, so old markers are ignored. */
const VERSION = 1;
const NIX_OPTIONS = ["--store", "local", "--option", "build-users-group", "", "--option", "substituters", ""];

/**
 * Store path of a root whose closure is `size` paths (including `busybox`,
 * which must itself have no references). Built once per size and busybox.
 */
export function ensureSyntheticClosure(busybox: string, size: number): string {
  if (!Number.isInteger(size) || size < 3) throw new RangeError(`a synthetic closure needs at least 3 paths, not ${size}`);
  const marker = join(STATE_DIR, `closure-v${VERSION}-${size}.json`);
  try {
    const m = JSON.parse(readFileSync(marker, "utf8")) as { busybox?: unknown; root?: unknown };
    if (m.busybox === busybox && typeof m.root === "string" && existsSync(m.root)) return m.root;
  } catch {
    // no marker yet, or a stale one: build
  }
  const leaves = size - 2;
  const expr = `
    let
      bb = builtins.storePath "${busybox}";
      leaves = builtins.genList (i: builtins.toFile "lre-bench-leaf-${size}-\${toString i}" "leaf \${toString i}\\n") ${leaves};
    in builtins.toFile "lre-bench-closure-${size}" (builtins.concatStringsSep "\\n" ([ "\${bb}" ] ++ leaves))`;
  const out = run(["nix-instantiate", ...NIX_OPTIONS, "--read-write-mode", "--eval", "--strict", "-E", expr]);
  const root = JSON.parse(out) as string;
  mkdirSync(GC_ROOTS, { recursive: true });
  run(["nix-store", ...NIX_OPTIONS, "--add-root", join(GC_ROOTS, `closure-${size}`), "--realise", root]);
  mkdirSync(STATE_DIR, { recursive: true });
  const tmp = `${marker}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ busybox, root }) + "\n");
  renameSync(tmp, marker);
  return root;
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`"${argv.slice(0, 2).join(" ")} …" failed with exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}
