/**
 * Drives Debian's Bazel 4.2.3 (package bazel-bootstrap) from tests, offline.
 *
 * What this Bazel needs on this machine, found by trying:
 *  - The system rc file /etc/bazel/bazelrc must stay enabled: it carries
 *    `--install_base=/usr/share/bazel --trust_install_base`, without which the
 *    Debian launcher looks for an embedded zip in itself and dies with
 *    "Failed to open '/proc/self/exe' as a zip file". It also sets
 *    `--sandbox_debug`, which floods stderr, so every build passes
 *    `--nosandbox_debug`. The user's ~/.bazelrc is ignored (`--nohome_rc`), and
 *    so is any workspace rc (`--noworkspace_rc`).
 *  - Because the install base is the prebuilt /usr/share/bazel, nothing is
 *    extracted on first start; the first start of a new output_user_root still
 *    costs a JVM start and a few seconds of analysis.
 *  - Genrules and Starlark rules need nothing from the network (`@bazel_tools`
 *    is embedded and `local_config_sh` is detected locally). Java rules would
 *    need a JDK repository, so fixtures must not use them.
 *  - Unix-socket remotes (`unix:` / `unix://`) need netty's native epoll
 *    library, which the package lacks ("Unix domain sockets are unsupported on
 *    this platform"); `ensureNettyEpoll()` fetches it from Maven Central and
 *    `BazelWorkspace` puts it on `java.library.path`.
 *  - `--incompatible_strict_action_env` keeps PATH out of the action keys, so
 *    the cache key of an action does not depend on the shell that ran the test.
 *  - A Bazel server outlives the client. Every workspace gets its own
 *    `--output_user_root` in a temp dir, `shutdown()` must be called when done,
 *    and `--max_idle_secs` makes a forgotten server exit by itself.
 *
 * Summary lines printed by Bazel 4.2.3 (observed):
 *   INFO: 4 processes: 1 internal, 3 linux-sandbox.
 *   INFO: 4 processes: 1 internal, 3 processwrapper-sandbox.
 *   INFO: 4 processes: 1 internal, 3 local.
 *   INFO: 4 processes: 3 remote cache hit, 1 internal.   (remote or disk cache)
 *   INFO: 1 process: 1 internal.
 */
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { GetActionResultRequest, type Digest } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

/** Result of one child process run to completion. */
export interface CommandResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Kill the child after this long; the result then carries its output so far. */
  readonly timeoutMs?: number;
}

/** Runs argv to completion, capturing both streams; never throws for a non-zero exit. */
export async function runCommand(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const proc = Bun.spawn([...argv], {
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { ...process.env, ...options.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => proc.kill("SIGKILL"), options.timeoutMs);
  try {
    const [stdout, stderr, exitCode] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    return { exitCode, stdout, stderr };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/** Runs argv and throws, with both streams in the message, unless it exits 0. */
export async function runChecked(argv: readonly string[], options: RunOptions = {}): Promise<CommandResult> {
  const result = await runCommand(argv, options);
  if (result.exitCode !== 0) {
    throw new Error(`"${argv.join(" ")}" exited with ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`);
  }
  return result;
}

let aptUpdated = false;

/** Installs Debian packages, running `apt-get update` once if the first attempt fails. */
export async function aptGetInstall(packages: readonly string[]): Promise<void> {
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const install = ["apt-get", "install", "-y", "--no-install-recommends", ...packages];
  const first = await runCommand(install, { env });
  if (first.exitCode === 0) return;
  if (!aptUpdated) {
    await runChecked(["apt-get", "update"], { env });
    aptUpdated = true;
  }
  await runChecked(install, { env });
}

/** Makes sure a command is on PATH, installing its Debian package if not. */
export async function ensureCommand(command: string, debianPackage: string): Promise<string> {
  const found = Bun.which(command);
  if (found !== null) return found;
  await aptGetInstall([debianPackage]);
  const installed = Bun.which(command);
  if (installed === null) throw new Error(`installed Debian package "${debianPackage}" but "${command}" is still not on PATH`);
  return installed;
}

/** Path of the `bazel` launcher, installing Debian's bazel-bootstrap (Bazel 4.2.3) if missing. */
export function ensureBazel(): Promise<string> {
  return ensureCommand("bazel", "bazel-bootstrap");
}

/** Root of per-user caches shared by test runs (downloaded tools, built binaries). */
export const TEST_CACHE_DIR = join(homedir(), ".cache", "lre-test");

const NETTY_VERSION = "4.1.48.Final";
const NETTY_LIBRARY = "libnetty_transport_native_epoll_x86_64.so";

/**
 * Directory holding netty's native epoll library, the one Bazel 4.2.3 needs to
 * dial `unix:` remotes. Fetched once with Maven into ~/.m2 and extracted into
 * TEST_CACHE_DIR; later calls return at once. Installs maven and unzip if
 * missing.
 */
export async function ensureNettyEpoll(): Promise<string> {
  const dir = join(TEST_CACHE_DIR, "netty-epoll", NETTY_VERSION);
  if (existsSync(join(dir, NETTY_LIBRARY))) return dir;

  const mvn = await ensureCommand("mvn", "maven");
  const unzip = await ensureCommand("unzip", "unzip");
  const coordinates = `io.netty:netty-transport-native-epoll:${NETTY_VERSION}:jar:linux-x86_64`;
  await runChecked([mvn, "--batch-mode", "--quiet", "dependency:get", `-Dartifact=${coordinates}`, "-Dtransitive=false"]);

  const jar = join(
    homedir(), ".m2", "repository", "io", "netty", "netty-transport-native-epoll", NETTY_VERSION,
    `netty-transport-native-epoll-${NETTY_VERSION}-linux-x86_64.jar`,
  );
  if (!existsSync(jar)) throw new Error(`Maven reported success but "${jar}" does not exist`);

  // Extract next to the final place, then rename: a concurrent caller sees the
  // directory complete or not at all.
  mkdirSync(dirname(dir), { recursive: true });
  const staging = mkdtempSync(join(dirname(dir), "staging-"));
  try {
    await runChecked([unzip, "-o", "-j", jar, `META-INF/native/${NETTY_LIBRARY}`, "-d", staging]);
    if (!existsSync(join(staging, NETTY_LIBRARY))) throw new Error(`"${jar}" holds no META-INF/native/${NETTY_LIBRARY}`);
    try {
      renameSync(staging, dir);
    } catch (err) {
      if (!existsSync(join(dir, NETTY_LIBRARY))) throw err;
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return dir;
}

/** Bazel's per-build process summary, e.g. "INFO: 4 processes: 3 remote cache hit, 1 internal." */
export interface ProcessSummary {
  /** The line as printed, without the "INFO: " prefix. */
  readonly line: string;
  /** The total Bazel printed first. */
  readonly total: number;
  /** Count per kind: "remote cache hit", "internal", "linux-sandbox", "local", "remote", ... */
  readonly byKind: Readonly<Record<string, number>>;
}

/** Count of one kind in a summary; 0 when Bazel did not list it. */
export function countOf(summary: ProcessSummary, kind: string): number {
  return summary.byKind[kind] ?? 0;
}

/**
 * Finds the last process summary in Bazel's output. Returns undefined if there
 * is none (for example when the build failed during analysis).
 */
export function parseProcessSummary(output: string): ProcessSummary | undefined {
  const pattern = /^(?:INFO: )?((\d+) process(?:es)?(?:: (.*?))?\.)\s*$/gm;
  let last: ProcessSummary | undefined;
  for (const m of output.matchAll(pattern)) {
    const byKind: Record<string, number> = {};
    for (const part of (m[3] ?? "").split(",")) {
      const item = /^\s*(\d+) (.+?)\s*$/.exec(part);
      if (item === null) continue;
      const kind = item[2] as string;
      byKind[kind] = (byKind[kind] ?? 0) + Number(item[1]);
    }
    last = { line: m[1] as string, total: Number(m[2]), byKind };
  }
  return last;
}

export interface BazelResult extends CommandResult {
  readonly argv: readonly string[];
  /** The process summary of a build, if Bazel printed one. */
  readonly summary: ProcessSummary | undefined;
}

/** A failed Bazel command, with everything it printed. */
export class BazelError extends Error {
  override readonly name = "BazelError";
  constructor(readonly result: BazelResult) {
    super(`"${result.argv.join(" ")}" exited with ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`);
  }
}

/** One output file as a test compares it: its bytes and whether it is executable. */
export interface OutputEntry {
  readonly bytes: Uint8Array;
  readonly executable: boolean;
}

export interface BazelWorkspaceOptions {
  /** A fixture directory copied in first (e.g. test/e2e/workspaces/NAME). */
  readonly copyFrom?: string;
  /** Workspace files by relative path, written after copyFrom. A WORKSPACE file is added if neither has one. */
  readonly files?: Readonly<Record<string, string>>;
  /** Extra Bazel startup options (before the command). */
  readonly startupOptions?: readonly string[];
  /** Flags added to every build, before the per-build flags. */
  readonly buildFlags?: readonly string[];
  /** Seconds an idle server lives on if shutdown() is never reached. @default 300 */
  readonly maxIdleSecs?: number;
}

/**
 * A throwaway Bazel workspace with its own output_user_root (so its own Bazel
 * server), in one temp directory. One per test file: the server is reused by
 * every build, so later builds skip the JVM start.
 */
export class BazelWorkspace {
  private constructor(
    readonly bazel: string,
    /** Temp directory holding the workspace and the output user root. */
    readonly root: string,
    /** The workspace directory (where WORKSPACE is). */
    readonly dir: string,
    readonly outputUserRoot: string,
    private readonly startupOptions: readonly string[],
    private readonly buildFlags: readonly string[],
  ) {}

  static async create(options: BazelWorkspaceOptions): Promise<BazelWorkspace> {
    const [bazel, epoll] = await Promise.all([ensureBazel(), ensureNettyEpoll()]);
    const root = mkdtempSync(join(tmpdir(), "lre-bazel-"));
    const dir = join(root, "ws");
    const outputUserRoot = join(root, "out");
    mkdirSync(dir);
    mkdirSync(outputUserRoot);
    if (options.copyFrom !== undefined) cpSync(options.copyFrom, dir, { recursive: true });
    for (const [path, content] of Object.entries(options.files ?? {})) writeWorkspaceFile(dir, path, content);
    if (!existsSync(join(dir, "WORKSPACE")) && !existsSync(join(dir, "WORKSPACE.bazel"))) {
      writeWorkspaceFile(dir, "WORKSPACE", 'workspace(name = "lre_e2e")\n');
    }
    const startup = [
      `--output_user_root=${outputUserRoot}`,
      "--nohome_rc",
      "--noworkspace_rc",
      `--host_jvm_args=-Djava.library.path=${epoll}`,
      `--max_idle_secs=${options.maxIdleSecs ?? 300}`,
      ...(options.startupOptions ?? []),
    ];
    return new BazelWorkspace(bazel, root, dir, outputUserRoot, startup, options.buildFlags ?? []);
  }

  /** Writes (or overwrites) one workspace file. */
  writeFile(path: string, content: string): void {
    writeWorkspaceFile(this.dir, path, content);
  }

  /** Runs any Bazel command in the workspace; never throws for a non-zero exit. */
  async run(command: string, args: readonly string[] = []): Promise<BazelResult> {
    const argv = [this.bazel, ...this.startupOptions, command, ...args];
    const result = await runCommand(argv, { cwd: this.dir });
    let stderr = result.stderr;
    if (stderr.includes("Server terminated abruptly")) stderr += this.serverLogTail();
    return { ...result, stderr, argv, summary: parseProcessSummary(result.stderr) };
  }

  /** The end of the Bazel server's own log (jvm.out), to explain a crashed server. */
  private serverLogTail(): string {
    const tails: string[] = [];
    for (const base of readdirSync(this.outputUserRoot)) {
      const log = join(this.outputUserRoot, base, "server", "jvm.out");
      if (existsSync(log)) tails.push(`\n--- ${log} (end) ---\n${readFileSync(log, "utf8").slice(-8000)}`);
    }
    return tails.join("");
  }

  /** `bazel build` of targets with extra flags; a failed build returns its result too. */
  tryBuild(targets: readonly string[], flags: readonly string[] = []): Promise<BazelResult> {
    const common = [
      "--noshow_progress",
      "--nosandbox_debug",
      "--color=no",
      "--curses=no",
      "--incompatible_strict_action_env",
    ];
    return this.run("build", [...common, ...this.buildFlags, ...flags, "--", ...targets]);
  }

  /** `bazel build` that throws a BazelError unless the build succeeds and prints a summary. */
  async build(targets: readonly string[], flags: readonly string[] = []): Promise<BazelResult & { summary: ProcessSummary }> {
    const result = await this.tryBuild(targets, flags);
    if (result.exitCode !== 0 || result.summary === undefined) throw new BazelError(result);
    return { ...result, summary: result.summary };
  }

  /** `bazel clean`: drops outputs and the local action cache, keeps the server. */
  async clean(): Promise<void> {
    const result = await this.run("clean");
    if (result.exitCode !== 0) throw new BazelError(result);
  }

  /** Absolute path of a file or directory under bazel-bin. */
  binPath(relative: string): string {
    return join(this.dir, "bazel-bin", relative);
  }

  /**
   * Build outputs under bazel-bin, keyed by path relative to bazel-bin;
   * directories are walked and each entry inside listed. Empty directories
   * appear with a trailing "/" and no bytes.
   */
  readOutputs(relatives: readonly string[]): Map<string, OutputEntry> {
    const out = new Map<string, OutputEntry>();
    const visit = (rel: string): void => {
      const abs = this.binPath(rel);
      const st = statSync(abs);
      if (st.isDirectory()) {
        const entries = readdirSync(abs).sort();
        if (entries.length === 0) out.set(`${rel}/`, { bytes: new Uint8Array(), executable: false });
        for (const name of entries) visit(`${rel}/${name}`);
      } else {
        out.set(rel, { bytes: new Uint8Array(readFileSync(abs)), executable: (st.mode & 0o100) !== 0 });
      }
    };
    for (const rel of relatives) visit(rel);
    return out;
  }

  /** Stops this workspace's Bazel server. Safe to call more than once. */
  async shutdown(): Promise<void> {
    if (!existsSync(this.outputUserRoot)) return;
    const result = await this.run("shutdown");
    if (result.exitCode !== 0) throw new BazelError(result);
  }

  /** Shuts the server down, then deletes the workspace and output root. */
  async dispose(): Promise<void> {
    try {
      await this.shutdown();
    } finally {
      removeTree(this.root);
    }
  }
}

function writeWorkspaceFile(dir: string, path: string, content: string): void {
  const abs = join(dir, path);
  mkdirSync(dirname(abs), { recursive: true });
  writeFileSync(abs, content);
}

/** Bazel leaves read-only files and directories behind; make them writable before deleting. */
function removeTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    const makeWritable = (p: string): void => {
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (st === undefined || st.isSymbolicLink()) return;
      if (st.isDirectory()) {
        chmodSync(p, 0o755);
        for (const name of readdirSync(p)) makeWritable(join(p, name));
      }
    };
    makeWritable(path);
    rmSync(path, { recursive: true, force: true });
  }
}

/** One GetActionResult call found in a Bazel gRPC log. */
export interface LoggedActionLookup {
  readonly instanceName: string;
  readonly actionDigest: Digest;
  /** Whether the server answered with an ActionResult (a hit). */
  readonly hit: boolean;
}

/**
 * Reads the file Bazel writes with `--experimental_remote_grpc_log=PATH` and
 * returns every GetActionResult call in it: the way to learn the digests of
 * the Actions Bazel sent, which Bazel 4.2.3 prints nowhere else.
 *
 * The file is a sequence of length-delimited `remote_logging.LogEntry`
 * messages (Bazel's src/main/protobuf/remote_execution_log.proto). We walk
 * only the fields we need, by number: LogEntry.details = 4,
 * RpcCallDetails.get_action_result = 8, GetActionResultDetails.request = 1
 * and .response = 2. The request itself is a REAPI message and decoded with
 * our generated code.
 */
export function readGrpcLogActionLookups(path: string): LoggedActionLookup[] {
  const data = new Uint8Array(readFileSync(path));
  const found: LoggedActionLookup[] = [];
  const reader = new BinaryReader(data);
  while (reader.pos < data.length) {
    const entry = reader.bytes();
    const details = lastField(entry, 4);
    const lookup = details === undefined ? undefined : lastField(details, 8);
    if (lookup === undefined) continue;
    const request = lastField(lookup, 1);
    if (request === undefined) continue;
    const decoded = GetActionResultRequest.decode(request);
    if (decoded.actionDigest === undefined) continue;
    found.push({
      instanceName: decoded.instanceName,
      actionDigest: decoded.actionDigest,
      hit: lastField(lookup, 2) !== undefined,
    });
  }
  return found;
}

/** The bytes of the last length-delimited field with this number, if any. */
function lastField(message: Uint8Array, fieldNo: number): Uint8Array | undefined {
  const reader = new BinaryReader(message);
  let value: Uint8Array | undefined;
  while (reader.pos < message.length) {
    const [no, wireType] = reader.tag();
    if (no === fieldNo && wireType === 2) value = reader.bytes();
    else reader.skip(wireType);
  }
  return value;
}
