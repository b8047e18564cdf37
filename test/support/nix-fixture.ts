/**
 * A real, tiny Nix toolchain for tests, built offline from the host's
 * busybox-static. Tests of the sandbox, the executor and the end-to-end suite
 * all need store paths with real closures registered in Nix's own database;
 * faking them would test nothing that matters.
 *
 * What gets built (all as root, local store, no daemon, no network):
 *
 *  1. `busybox`     — `nix-store --add` of a directory holding the host's
 *                     static busybox as bin/busybox plus one relative symlink
 *                     per applet (bin/sh -> busybox, ...). A static binary has
 *                     no references, so this path's closure is itself.
 *  2. `toolchain-a` — a derivation built with that busybox as its builder;
 *                     bin/<applet> are absolute symlinks into the busybox
 *                     path, so Nix's reference scanner records
 *                     toolchain-a -> busybox.
 *  3. `toolchain-b` — bin/hello is a script whose shebang is toolchain-a's sh,
 *                     so toolchain-b -> toolchain-a -> busybox: a transitive
 *                     closure of three paths.
 *  4. `outsider`    — built the same way but referring to nothing; it must
 *                     never be visible in a sandbox that declared only the
 *                     toolchains.
 *
 * What Debian's nix-bin (2.8) needs for this as root without nix-daemon:
 *  - Nothing to create by hand: as root the "auto" store is the local store,
 *    and the first write creates /nix/store and /nix/var/nix/db itself. We
 *    still pass `--store local` so a stray daemon socket is never used.
 *  - `build-users-group =` (empty): otherwise Nix wants to run builders as the
 *    nixbld users, which a fresh machine may lack; as root it then builds as
 *    root, which is fine for these trusted builders.
 *  - `sandbox = false`: Nix's own build sandbox needs a /bin/sh it would take
 *    from nixpkgs; our builders are already store paths.
 *  - `substituters =` (empty): nothing may be fetched; the expression uses no
 *    nixpkgs and no fetchers, so no NIX_PATH and no experimental features are
 *    needed either (plain `builtins.derivation` + `builtins.storePath`).
 *
 * Idempotent and safe to call from many test files and processes: results are
 * recorded in a marker file; when the marker is missing or stale, the build
 * runs in a child process under `flock(1)` (a kernel lock, released even if
 * the holder is killed) which re-checks the marker before building. Outputs
 * are registered as GC roots under /nix/var/nix/gcroots/lre-fixture so a
 * `nix-collect-garbage` elsewhere does not pull them from under the tests.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

export interface NixToolchain {
  /** Store path of the busybox directory (bin/busybox + applet symlinks). */
  readonly busybox: string;
  /** Store path referring to `busybox` (bin/<applet> symlinks). */
  readonly toolchainA: string;
  /** Store path referring to `toolchainA` (bin/hello, share/greeting). */
  readonly toolchainB: string;
  /** Store path outside the closure of the three above. */
  readonly outsider: string;
  /** Absolute path of a POSIX shell inside toolchainA's closure. */
  readonly shell: string;
}

/** Bump when the expression below changes, so old markers are ignored. */
const FIXTURE_VERSION = 1;
const STATE_DIR = "/nix/var/lre/test-fixture";
const MARKER = join(STATE_DIR, `toolchain-v${FIXTURE_VERSION}.json`);
const LOCK = join(STATE_DIR, "build.lock");
const GC_ROOTS = "/nix/var/nix/gcroots/lre-fixture";
const HOST_BUSYBOX_CANDIDATES = ["/bin/busybox", "/usr/bin/busybox"];

const NIX_OPTIONS = [
  "--store", "local",
  "--option", "build-users-group", "",
  "--option", "sandbox", "false",
  "--option", "substituters", "",
];

/**
 * The derivations. `bb` is the busybox store path; builtins.storePath turns
 * the string back into a store path with context, so it becomes an input of
 * each derivation. PATH points at busybox's applet symlinks because Nix gives
 * builders no PATH of their own.
 */
const EXPRESSION = `
{ bb }:
let
  busybox = builtins.storePath bb;
  mk = name: script: builtins.derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "\${busybox}/bin/busybox";
    args = [ "sh" "-e" "-c" script ];
    PATH = "\${busybox}/bin";
  };
in rec {
  toolchainA = mk "toolchain-a" ''
    mkdir -p $out/bin
    for applet in $(busybox --list); do
      ln -s \${busybox}/bin/busybox $out/bin/$applet
    done
  '';
  toolchainB = mk "toolchain-b" ''
    mkdir -p $out/bin $out/share
    echo 'hello from toolchain-b' > $out/share/greeting
    printf '#!%s\\necho "hello from toolchain-b"\\n' \${toolchainA}/bin/sh > $out/bin/hello
    chmod 0555 $out/bin/hello
  '';
  outsider = mk "outsider" ''
    mkdir -p $out
    echo 'outsider: must stay invisible' > $out/secret
  '';
}
`;

let inProcess: Promise<NixToolchain> | undefined;

/** Builds (once) and returns the fixture toolchain. */
export function ensureNixToolchain(): Promise<NixToolchain> {
  inProcess ??= ensureAcrossProcesses().catch((err: unknown) => {
    inProcess = undefined; // let a later caller retry after fixing the machine
    throw err;
  });
  return inProcess;
}

async function ensureAcrossProcesses(): Promise<NixToolchain> {
  const ready = readMarker();
  if (ready) return ready;
  mkdirSync(STATE_DIR, { recursive: true });
  // Re-enter this module as a script under an exclusive flock; the child
  // re-checks the marker so only the first of N racing callers builds.
  const child = Bun.spawn(["flock", "--exclusive", "--timeout", "300", LOCK, process.execPath, import.meta.path, "--build"], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, BUN_BE_BUN: "1" },
  });
  const [code, out, err] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
  if (code !== 0) {
    throw new Error(`building the Nix test toolchain failed (exit ${code}); check that nix-bin, busybox-static and util-linux (flock) are installed and that this runs as root\n${out}${err}`);
  }
  const built = readMarker();
  if (!built) throw new Error(`the Nix test toolchain build finished but left no valid marker at "${MARKER}"`);
  return built;
}

function readMarker(): NixToolchain | undefined {
  try {
    const data = JSON.parse(readFileSync(MARKER, "utf8")) as Partial<NixToolchain>;
    const { busybox, toolchainA, toolchainB, outsider, shell } = data;
    if (typeof busybox !== "string" || typeof toolchainA !== "string" || typeof toolchainB !== "string" || typeof outsider !== "string" || typeof shell !== "string") return undefined;
    // A deleted store (fresh container, GC by hand) makes the marker stale.
    for (const p of [busybox, toolchainA, toolchainB, outsider, shell]) if (!existsSync(p)) return undefined;
    return { busybox, toolchainA, toolchainB, outsider, shell };
  } catch {
    return undefined;
  }
}

function run(argv: string[]): string {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    throw new Error(`"${argv.join(" ")}" failed with exit ${r.exitCode}: ${r.stderr.toString()}`);
  }
  return r.stdout.toString().trim();
}

/** Runs in the child, holding the lock. */
function buildUnderLock(): void {
  if (readMarker()) return;
  const hostBusybox = HOST_BUSYBOX_CANDIDATES.find((p) => existsSync(p));
  if (!hostBusybox) throw new Error(`no static busybox at ${HOST_BUSYBOX_CANDIDATES.join(" or ")}; install busybox-static`);

  // 1. The busybox directory. Its store path depends only on its contents,
  //    so re-adding after a lost marker yields the same path.
  const staging = join(tmpdir(), `lre-busybox-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  const stagingBin = join(staging, "busybox", "bin");
  mkdirSync(stagingBin, { recursive: true });
  copyFileSync(hostBusybox, join(stagingBin, "busybox"));
  const applets = run([hostBusybox, "--list"]).split("\n").filter((a) => a && a !== "busybox");
  for (const applet of applets) symlinkSync("busybox", join(stagingBin, applet));
  let busybox: string;
  try {
    busybox = run(["nix-store", ...NIX_OPTIONS, "--add", join(staging, "busybox")]);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }

  // 2-4. The derivations, each with a GC root.
  mkdirSync(GC_ROOTS, { recursive: true });
  const build = (attr: string): string =>
    run(["nix-build", ...NIX_OPTIONS, "--quiet", "--argstr", "bb", busybox, "-E", EXPRESSION, "-A", attr, "--out-link", join(GC_ROOTS, attr)]);
  const toolchainA = build("toolchainA");
  const toolchainB = build("toolchainB");
  const outsider = build("outsider");
  // busybox is kept alive through toolchainA's references; root it anyway.
  run(["nix-store", ...NIX_OPTIONS, "--add-root", join(GC_ROOTS, "busybox"), "--realise", busybox]);

  const result: NixToolchain = { busybox, toolchainA, toolchainB, outsider, shell: `${toolchainA}/bin/sh` };
  const tmp = `${MARKER}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(result, null, 2) + "\n");
  renameSync(tmp, MARKER);
  // Drop markers of older fixture versions; their paths remain in the store.
  for (const name of readdirSync(STATE_DIR)) {
    if (name.startsWith("toolchain-v") && join(STATE_DIR, name) !== MARKER) rmSync(join(STATE_DIR, name), { force: true });
  }
}

if (import.meta.main && process.argv.includes("--build")) {
  try {
    buildUnderLock();
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
