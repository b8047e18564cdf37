import { findPidsCgroupDir } from "../../sandbox/mod";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { freeBytesAt, nearestExisting, defaultMaxCacheBytes } from "../config/defaults";
import { formatSize } from "../config/size";
import { messageOf } from "./cli-error";
import { ensureWritableDir } from "./data-dir";
import { probeSocket } from "./socket";

/**
 * `lre doctor`: checks what `lre serve` and its sandbox need, on the real
 * machine (bwrap is actually run, the Nix database actually opened), and gives
 * the command that fixes each problem.
 */

export type CheckStatus = "ok" | "warn" | "fail";

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** Commands or steps that fix a problem. */
  readonly fix: readonly string[];
}

export interface DoctorInput {
  readonly dataDir: string;
  readonly socketPath: string;
  /** Searched for bwrap, as serve will search it. */
  readonly path: string;
  readonly nixStore?: string;
  readonly nixDb?: string;
}

const ok = (name: string, detail: string): CheckResult => ({ name, status: "ok", detail, fix: [] });
const warn = (name: string, detail: string, fix: string[] = []): CheckResult => ({ name, status: "warn", detail, fix });
const fail = (name: string, detail: string, fix: string[]): CheckResult => ({ name, status: "fail", detail, fix });

export async function runChecks(input: DoctorInput): Promise<CheckResult[]> {
  const bwrap = Bun.which("bwrap", { PATH: input.path });
  return [
    bwrap === null
      ? fail("bubblewrap", `bwrap not found on PATH (${input.path})`, ["apt-get install -y bubblewrap"])
      : ok("bubblewrap", `${bwrap} (${bwrapVersion(bwrap)})`),
    bwrap === null ? fail("namespaces", "not checked: bubblewrap is missing", ["apt-get install -y bubblewrap"]) : checkNamespaces(bwrap),
    checkProcessLimit(),
    checkNixStore(input.nixStore ?? "/nix/store"),
    checkNixDb(input.nixDb ?? "/nix/var/nix/db/db.sqlite"),
    checkDataDir(input.dataDir),
    checkFreeDisk(input.dataDir),
    await checkSocketDir(input.socketPath),
  ];
}

function bwrapVersion(bwrap: string): string {
  const r = Bun.spawnSync([bwrap, "--version"], { stdout: "pipe", stderr: "pipe" });
  return r.stdout.toString().trim() || "version unknown";
}

/** Runs a sandbox like the executor's: all namespaces unshared, whole root read-only. */
function checkNamespaces(bwrap: string): CheckResult {
  const r = Bun.spawnSync([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  if (r.exitCode === 0) return ok("namespaces", "bwrap --unshare-all ran a command");
  const why = r.stderr.toString().trim() || `exit status ${r.exitCode}`;
  return fail("namespaces", `bwrap cannot create namespaces: ${why}`, userNamespaceFixes());
}

/** The kernel knobs that commonly forbid unprivileged user namespaces, as far as this kernel has them. */
function userNamespaceFixes(): string[] {
  const read = (p: string) => {
    try {
      return readFileSync(p, "utf8").trim();
    } catch {
      return undefined;
    }
  };
  const fixes: string[] = [];
  if (read("/proc/sys/kernel/unprivileged_userns_clone") === "0") fixes.push("sysctl -w kernel.unprivileged_userns_clone=1");
  if (read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") === "1") {
    fixes.push("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0");
  }
  if (read("/proc/sys/user/max_user_namespaces") === "0") fixes.push("sysctl -w user.max_user_namespaces=15000");
  if (fixes.length === 0) {
    fixes.push(
      "inside a container, allow unshare(2): e.g. docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined (or --privileged)",
    );
  } else {
    fixes.push("make it permanent with a file in /etc/sysctl.d/");
  }
  return fixes;
}

/**
 * Actions run with a process limit so a fork bomb cannot take the machine
 * down; the sandbox refuses to run without one. Root is exempt from
 * RLIMIT_NPROC, so as root a writable pids cgroup is required.
 */
function checkProcessLimit(): CheckResult {
  const dir = findPidsCgroupDir();
  if (dir !== undefined) return ok("process limit", `per-action pids cgroups under ${dir}`);
  if (process.getuid?.() !== 0) return ok("process limit", "per-action RLIMIT_NPROC (prlimit), as a non-root user");
  return fail("process limit", "running as root with no writable pids cgroup: actions would have no process limit, so lre refuses to run them", [
    "run lre as a non-root user, or",
    "give lre a delegated cgroup v2 with the pids controller (e.g. systemd-run --user -p Delegate=yes --scope lre serve)",
  ]);
}

function checkNixStore(store: string): CheckResult {
  try {
    const n = readdirSync(store).length;
    return ok("nix store", `${store} readable (${n} entries)`);
  } catch (err) {
    return fail("nix store", `cannot read ${store}: ${messageOf(err)}`, ["apt-get install -y nix-bin"]);
  }
}

/** lre reads closures straight from Nix's database (no nix CLI at run time), read-only. */
function checkNixDb(dbPath: string): CheckResult {
  if (!existsSync(dbPath)) {
    return fail("nix database", `${dbPath} does not exist`, [
      "apt-get install -y nix-bin",
      "nix-store --verify   # as root: creates the database",
    ]);
  }
  try {
    const db = new Database(dbPath, { readonly: true });
    try {
      const row = db.query("SELECT COUNT(*) AS n FROM ValidPaths").get() as { n: number } | null;
      return ok("nix database", `${dbPath} readable (${row?.n ?? 0} valid paths)`);
    } finally {
      db.close();
    }
  } catch (err) {
    return fail("nix database", `cannot read ${dbPath}: ${messageOf(err)}`, [
      `chmod a+r ${dbPath} && chmod a+rx ${dirname(dbPath)}`,
    ]);
  }
}

/** Probes by writing, like serve; a directory that does not exist yet is judged by the ancestor it would be created in. */
function checkDataDir(dataDir: string): CheckResult {
  try {
    if (!existsSync(dataDir)) {
      const base = nearestExisting(dataDir);
      if (!statSync(base).isDirectory()) throw new Error(`"${base}" is not a directory`);
      // access(W_OK) says yes to root even on read-only filesystems; creating something is the real test.
      rmdirSync(mkdtempSync(join(base, ".lre-doctor-")));
      return ok("data dir", `${dataDir} will be created (under ${base})`);
    }
    ensureWritableDir(dataDir);
    return ok("data dir", `${dataDir} writable`);
  } catch (err) {
    const why = messageOf(err);
    const detail = why.startsWith("data dir") ? why : `data dir "${dataDir}" cannot be created: ${why}`;
    return fail("data dir", detail, [`mkdir -p ${dataDir} && chown $(id -u) ${dataDir}`, "or pass --data-dir DIR"]);
  }
}

const MIN_FREE_BYTES = 256 * 1024 ** 2;
const LOW_FREE_BYTES = 5 * 1024 ** 3;

function checkFreeDisk(dataDir: string): CheckResult {
  let free: number;
  try {
    free = freeBytesAt(dataDir);
  } catch (err) {
    return fail("free disk", `cannot measure free space at ${nearestExisting(dataDir)}: ${messageOf(err)}`, []);
  }
  const detail = `${formatSize(free)} free at ${nearestExisting(dataDir)}; default --max-cache-size would be ${formatSize(defaultMaxCacheBytes(dataDir))}`;
  if (free < MIN_FREE_BYTES) return fail("free disk", detail, ["free some space, or pass --data-dir on a larger filesystem"]);
  if (free < LOW_FREE_BYTES) return warn("free disk", detail, ["builds may evict each other's blobs; free space or pass --data-dir"]);
  return ok("free disk", detail);
}

async function checkSocketDir(socketPath: string): Promise<CheckResult> {
  const name = "socket";
  if (Buffer.byteLength(socketPath) > 107) {
    return fail(name, `${socketPath} is longer than the 107 bytes a Unix socket path may have`, ["pass a shorter --socket"]);
  }
  const dir = dirname(socketPath);
  if (!existsSync(dir)) {
    const base = nearestExisting(dir);
    return ok(name, `${dir} will be created 0700 (under ${base})`);
  }
  const st = statSync(dir);
  if (!st.isDirectory()) return fail(name, `${dir} is not a directory`, [`pass --socket in another directory`]);
  if (existsSync(socketPath)) {
    const state = await probeSocket(socketPath).catch(() => "absent" as const);
    if (state === "live") {
      return warn(name, `a server is already listening on ${socketPath}; a second lre serve there would refuse to start`, [
        "stop that server, or pass another --socket",
      ]);
    }
  }
  const mode = (st.mode & 0o7777).toString(8);
  if (st.uid !== process.getuid?.()) {
    return warn(name, `${dir} belongs to uid ${st.uid}, not to you (mode ${mode})`, ["pass --socket in a directory you own"]);
  }
  if ((st.mode & 0o077) !== 0) {
    return warn(name, `${dir} is accessible to other users (mode ${mode}); the socket is 0600 but the directory should be 0700`, [
      `chmod 700 ${dir}`,
    ]);
  }
  return ok(name, `${dir} is private (mode ${mode})`);
}

const LABEL: Readonly<Record<CheckStatus, string>> = { ok: "OK  ", warn: "WARN", fail: "FAIL" };

export function formatChecks(results: readonly CheckResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${LABEL[r.status]}  ${r.name}: ${r.detail}`);
    for (const f of r.fix) lines.push(`      fix: ${f}`);
  }
  const failures = results.filter((r) => r.status === "fail").length;
  lines.push(failures === 0 ? "lre serve can run on this machine" : `${failures} problem(s) above block lre serve`);
  return lines.join("\n") + "\n";
}
