/**
 * Runs one SandboxSpec under bubblewrap and reports how it ended.
 *
 * Lifetime: bwrap's pid 1 (its reaper) is the only process we need to kill.
 * When it dies the kernel SIGKILLs everything left in the sandbox's pid
 * namespace, so double-forked or setsid'd daemons cannot outlive the action;
 * `--die-with-parent` extends that to lre itself dying. On timeout the
 * action's processes get SIGTERM first, then pid 1 gets SIGKILL after a grace
 * period (pid 1 of a namespace ignores SIGTERM from outside, so TERM goes to
 * its descendants, found by their pid-namespace inode).
 *
 * Process limit (fork bombs): the pid namespace has no size cap of its own.
 * RLIMIT_NPROC would do, but the kernel never enforces it for uid 0 and, set
 * on bwrap before it creates its user namespace, it would count all of the
 * user's host processes. So the limit is applied to the sandbox's pid 1 while
 * bwrap holds it at `--block-fd`, before the command is forked:
 *  - a pids cgroup (v1 `pids` hierarchy or a v2 directory with the pids
 *    controller) when one is writable: works for root and anyone delegated;
 *  - otherwise, for a non-root lre, RLIMIT_NPROC on pid 1 via prlimit(1):
 *    counted per (user namespace, uid), so only the sandbox's processes count.
 * If neither is possible the run is refused rather than silently unlimited.
 *
 * Output: stdout and stderr are pumped through lre into the given files so
 * their size can be capped; past the cap the action is killed.
 */
import { closeSync, constants as fsc, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmdirSync, statSync, accessSync, writeFileSync, writeSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { open, writeFile } from "node:fs/promises";
import { constants as osc } from "node:os";
import { join } from "node:path";
import { toBwrapOptions } from "./bwrap-args";
import { holdPaths } from "./in-use";
import { actionSeccompFilter } from "./seccomp";
import type { SandboxSpec } from "./spec";

export interface RunOptions {
  /** @default "bwrap" found on PATH, else /usr/bin/bwrap */
  readonly bwrapPath?: string;
  /** Files receiving the action's stdout and stderr (created or truncated). */
  readonly stdoutPath: string;
  readonly stderrPath: string;
  /**
   * Create each stream's file only once the action writes to it, so a stream
   * that stays empty leaves no file (the paths must not exist beforehand).
   * Most actions print nothing, and on ext4 every inode created in a
   * directory that churns costs a scan of recently deleted inodes.
   * @default false: both files always exist afterwards
   */
  readonly lazyStreamFiles?: boolean;
  readonly timeoutMs: number;
  /** Time between SIGTERM and SIGKILL. @default 5000 */
  readonly killGraceMs?: number;
  /** Per stream; beyond it the stream is truncated and the action killed. @default 64 MiB */
  readonly maxOutputBytes?: number;
  /**
   * Processes (and threads) the sandbox may hold at once. With a pids cgroup
   * the cap also leaves room for tasks of earlier runs that the reused cgroup
   * is still charged for (exited, not yet reaped by the host's init), so a run
   * may hold that many more once they are reaped. @default 1024
   */
  readonly maxProcesses?: number | "unlimited";
  /** A writable pids-cgroup directory to create per-run cgroups in. @default auto-detected */
  readonly pidsCgroupDir?: string;
  /** Load actionSeccompFilter() (see seccomp.ts). @default true */
  readonly seccomp?: boolean;
  readonly signal?: AbortSignal;
}

/**
 * bwrap never ran the command: a mount source is missing, the command cannot
 * be executed, or a namespace could not be created. Kept apart from a
 * command's own failure so that callers never cache it as an action result.
 */
export class SandboxStartError extends Error {
  override readonly name = "SandboxStartError";
  constructor(readonly bwrapExitCode: number, readonly bwrapMessage: string) {
    super(`Cannot start the sandbox: bubblewrap exited with ${bwrapExitCode}: ${bwrapMessage || "no message"}`);
  }
}

export interface RunResult {
  /** The command's exit status; 128 + N when it died of signal N. */
  readonly exitCode: number;
  /** Name of the signal that ended the command, when it was one. */
  readonly signal?: string;
  readonly timedOut: boolean;
  readonly outputLimitExceeded?: boolean;
  /** The caller's AbortSignal fired and the sandbox was killed. */
  readonly aborted?: boolean;
  readonly wallMs: number;
}

/** Options longer than this travel through `--args FD` instead of argv. */
const ARGS_FD_THRESHOLD_BYTES = 64 * 1024;
const DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024;
const DEFAULT_MAX_PROCESSES = 1024;
// Child fd numbers (Bun maps stdio[i] to fd i in the child).
const STATUS_FD = 3;
const BLOCK_FD = 4;
const ARGS_FD = 5;
const SECCOMP_FD = 6;

let cgroupSeq = 0;

export async function runSandboxed(spec: SandboxSpec, opts: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const options = toBwrapOptions(spec);
  const maxProcesses = opts.maxProcesses ?? DEFAULT_MAX_PROCESSES;
  const limitProcesses = maxProcesses !== "unlimited";
  const pidsCgroupParent = limitProcesses ? (opts.pidsCgroupDir ?? findPidsCgroupDir()) : undefined;
  if (limitProcesses && pidsCgroupParent === undefined && process.getuid?.() === 0) {
    throw new Error(
      "Cannot limit sandbox processes: running as root (where RLIMIT_NPROC is not enforced) and no writable pids cgroup was found; " +
        "mount the cgroup pids controller, pass pidsCgroupDir, or set maxProcesses to \"unlimited\"",
    );
  }
  const bwrapPath = opts.bwrapPath ?? defaultBwrap();
  refuseSetuid(bwrapPath);
  const useArgsFd = Buffer.byteLength(options.join("\0")) > ARGS_FD_THRESHOLD_BYTES;
  const seccomp = opts.seccomp ?? true ? seccompFilterBytes() : undefined;
  const argv = [
    bwrapPath,
    "--json-status-fd", String(STATUS_FD),
    ...(limitProcesses ? ["--block-fd", String(BLOCK_FD)] : []),
    ...(seccomp ? ["--seccomp", String(SECCOMP_FD)] : []),
    ...(useArgsFd ? ["--args", String(ARGS_FD)] : options),
    "--",
    ...spec.argv,
  ];

  const lazy = opts.lazyStreamFiles ?? false;
  const stdoutFile = new StreamFile(opts.stdoutPath);
  const stderrFile = new StreamFile(opts.stderrPath);
  if (!lazy) {
    try {
      await Promise.all([stdoutFile.handle(), stderrFile.handle()]);
    } catch (err) {
      await Promise.all([stdoutFile.close(), stderrFile.close()]);
      throw err;
    }
  }
  let proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  try {
    proc = Bun.spawn(argv, {
      stdio: ["ignore", "pipe", "pipe", "pipe", "pipe", useArgsFd ? "pipe" : "ignore", seccomp ? "pipe" : "ignore"],
      env: {},
    });
  } catch (err) {
    await stdoutFile.close();
    await stderrFile.close();
    throw new Error(`Cannot run bubblewrap "${argv[0]}": ${String(err)}; install bubblewrap or pass bwrapPath`);
  }
  const extra = proc.stdio as unknown as (number | null)[];
  const statusFd = extra[STATUS_FD] as number;
  const blockFd = extra[BLOCK_FD] as number;
  const argsFd = useArgsFd ? (extra[ARGS_FD] as number) : undefined;
  const seccompFd = seccomp ? (extra[SECCOMP_FD] as number) : undefined;

  const release = holdPaths(spec.mounts.flatMap((m) => (m.kind === "ro-bind" || m.kind === "bind" ? [m.source] : [])));
  let timedOut = false;
  let aborted = false;
  let outputLimitExceeded = false;
  let childPid: number | undefined;
  let pidNamespace: number | undefined;
  let statusExitCode: number | undefined;
  let cgroupDir: string | undefined;
  let limiting: Promise<void> | undefined;
  let killing: Promise<void> | undefined;
  let exited = false;

  const kill = (graceMs: number): Promise<void> => {
    killing ??= (async () => {
      if (childPid !== undefined && pidNamespace !== undefined && graceMs > 0) {
        signalNamespace(pidNamespace, childPid, "SIGTERM");
        const deadline = Date.now() + graceMs;
        while (!exited && Date.now() < deadline) await Bun.sleep(Math.min(20, graceMs));
      }
      if (exited) return;
      // Killing pid 1 tears down the whole namespace; killing bwrap itself
      // covers the window before pid 1 exists (die-with-parent does the rest).
      if (childPid !== undefined) trySignal(childPid, "SIGKILL");
      proc.kill("SIGKILL");
    })();
    return killing;
  };

  const timer = setTimeout(() => {
    timedOut = true;
    void kill(opts.killGraceMs ?? 5000);
  }, opts.timeoutMs);
  const onAbort = (): void => {
    aborted = true;
    void kill(0);
  };
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });

  const maxOutput = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const onOverflow = (): void => {
    outputLimitExceeded = true;
    void kill(0);
  };

  try {
    if (seccompFd !== undefined && seccomp) await writeAllAndClose(seccompFd, Buffer.from(seccomp));
    if (argsFd !== undefined) await writeAllAndClose(argsFd, Buffer.from(options.map((o) => o + "\0").join("")));

    const statusDone = readStatus(statusFd, (doc) => {
      if (typeof doc["child-pid"] === "number") {
        childPid = doc["child-pid"];
        if (typeof doc["pid-namespace"] === "number") pidNamespace = doc["pid-namespace"];
        if (limitProcesses) {
          // Asynchronous: moving a task between cgroups can wait for an RCU
          // grace period (≈ 10 ms when migrations are rare), which must not
          // stall the event loop and with it every other running action.
          const pid = childPid;
          limiting = (async () => {
            try {
              await applyProcessLimit(pid, maxProcesses, pidsCgroupParent, (dir) => (cgroupDir = dir));
              writeSync(blockFd, "1");
            } catch (err) {
              // EPIPE/ESRCH: bwrap already failed its setup and exited; its own
              // message will be reported. Anything else: never run unlimited.
              const code = (err as { code?: string }).code;
              if (code !== "EPIPE" && code !== "ESRCH") {
                void kill(0);
                throw err;
              }
            }
          })();
          // Awaited below; this only keeps a rejection that lands before then from counting as unhandled.
          limiting.catch(() => undefined);
        }
      }
      if (typeof doc["exit-code"] === "number") statusExitCode = doc["exit-code"];
    });
    const pumps = Promise.all([
      pump(proc.stdout, stdoutFile, maxOutput, onOverflow),
      pump(proc.stderr, stderrFile, maxOutput, onOverflow),
    ]);
    const outerCode = await proc.exited;
    exited = true;
    const [statusError] = await Promise.all([statusDone.then(() => undefined, (err: unknown) => err), pumps]);
    if (statusError !== undefined) throw statusError;
    if (limiting) await limiting;
    if (killing) await killing;

    // bwrap exits 1 on its own setup failures without an exit-code document.
    const exitCode = statusExitCode ?? (proc.signalCode !== null ? 128 + signalNumber(proc.signalCode) : outerCode);
    if (statusExitCode === undefined && !timedOut && !aborted && !outputLimitExceeded) {
      const stderr = (await Bun.file(opts.stderrPath).text().catch(() => "")).slice(-4000);
      throw new SandboxStartError(outerCode, stderr.trim());
    }
    const signal = exitCode > 128 ? signalName(exitCode - 128) : undefined;
    return {
      exitCode,
      ...(signal !== undefined ? { signal } : {}),
      timedOut,
      ...(outputLimitExceeded ? { outputLimitExceeded } : {}),
      ...(aborted ? { aborted } : {}),
      wallMs: performance.now() - started,
    };
  } finally {
    release();
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
    if (!exited) {
      await kill(0);
      await proc.exited;
    }
    for (const fd of [statusFd, blockFd]) tryClose(fd);
    await stdoutFile.close();
    await stderrFile.close();
    if (limiting) await limiting.catch(() => undefined);
    // Not awaited: the cgroup empties as the namespace's last tasks are
    // reaped, and the result does not depend on it.
    if (cgroupDir !== undefined && pidsCgroupParent !== undefined) void releaseCgroup(pidsCgroupParent, cgroupDir);
  }
}

/**
 * A setuid bwrap runs its setup with real root privileges on behalf of the
 * caller and has had privilege-escalation bugs (CVE-2019-12439,
 * CVE-2020-5291); lre needs none of that, so it refuses such a binary.
 */
function refuseSetuid(bwrapPath: string): void {
  let mode: number;
  try {
    mode = statSync(bwrapPath).mode;
  } catch {
    return; // reported with advice when spawning fails
  }
  if (mode & 0o4000) {
    throw new Error(`Refusing to run setuid bubblewrap "${bwrapPath}": use a non-setuid bwrap (user namespaces) instead`);
  }
}

let defaultBwrapPath: string | undefined;

function defaultBwrap(): string {
  // PATH lookups cost ≈ 0.1 ms each; PATH does not change under a running server.
  defaultBwrapPath ??= Bun.which("bwrap") ?? "/usr/bin/bwrap";
  return defaultBwrapPath;
}

let seccompBytes: Uint8Array | undefined;

/** The filter never changes within a process; compile it once. */
function seccompFilterBytes(): Uint8Array {
  seccompBytes ??= actionSeccompFilter();
  return seccompBytes;
}

/** Reads bwrap's newline-separated JSON documents until EOF. */
async function readStatus(fd: number, onDoc: (doc: Record<string, unknown>) => void): Promise<void> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of Bun.file(fd).stream()) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) onDoc(JSON.parse(line) as Record<string, unknown>);
    }
  }
  if (buffered.trim()) onDoc(JSON.parse(buffered) as Record<string, unknown>);
}

/** A stream's output file, opened (created or truncated) on first use. */
class StreamFile {
  private opened: Promise<FileHandle> | undefined;
  constructor(private readonly path: string) {}
  handle(): Promise<FileHandle> {
    this.opened ??= open(this.path, "w");
    return this.opened;
  }
  async close(): Promise<void> {
    if (this.opened === undefined) return;
    const h = await this.opened.catch(() => undefined);
    await h?.close();
  }
}

async function pump(stream: ReadableStream<Uint8Array>, file: StreamFile, max: number, onOverflow: () => void): Promise<void> {
  let written = 0;
  let overflowed = false;
  for await (const chunk of stream) {
    if (overflowed) continue; // keep draining so the action never blocks on a full pipe
    const room = max - written;
    const part = chunk.byteLength > room ? chunk.subarray(0, room) : chunk;
    if (part.byteLength > 0) await (await file.handle()).write(part);
    written += part.byteLength;
    // Also when an earlier chunk filled the cap exactly (pipe reads are 64
    // KiB, often the cap's own multiple): any byte beyond it is the overflow.
    if (chunk.byteLength > room) {
      overflowed = true;
      onOverflow();
    }
  }
}

async function writeAllAndClose(fd: number, data: Buffer): Promise<void> {
  let off = 0;
  try {
    while (off < data.length) {
      try {
        off += writeSync(fd, data, off, data.length - off);
      } catch (err) {
        // The socket may be non-blocking; bwrap drains it as it parses.
        if ((err as { code?: string }).code !== "EAGAIN") throw err;
        await Bun.sleep(1);
      }
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Puts the held pid 1 under a process cap. The cgroup (to remove later) is
 * reported through `created` as soon as it exists, so it is cleaned up even
 * if moving the task fails.
 */
async function applyProcessLimit(pid: number, max: number, cgroupParent: string | undefined, created: (dir: string) => void): Promise<void> {
  if (cgroupParent !== undefined) {
    const dir = takeCgroup(cgroupParent);
    created(dir);
    // A reused cgroup may still be charged for exited tasks of an earlier
    // run that their reaper has not collected yet (bwrap's pid 1 outlives
    // bwrap and is reaped by the host's init, which can take a second); the
    // cap leaves room for them, so this run still gets `max` of its own.
    const lingering = cgroupMax.has(dir) ? Number(readFileSync(join(dir, "pids.current"), "utf8")) || 0 : 0;
    if (cgroupMax.get(dir) !== max + lingering) {
      writeFileSync(join(dir, "pids.max"), String(max + lingering));
      cgroupMax.set(dir, max + lingering);
    }
    await writeFile(join(dir, "cgroup.procs"), String(pid));
    return;
  }
  const r = Bun.spawn(["prlimit", `--pid=${pid}`, `--nproc=${max}:${max}`], { stdout: "ignore", stderr: "pipe" });
  const [code, stderr] = await Promise.all([r.exited, new Response(r.stderr).text()]);
  if (code !== 0) throw new Error(`Cannot limit sandbox processes with prlimit: ${stderr.trim()}`);
}

const sweptCgroupParents = new Set<string>();

/**
 * Removes per-run cgroups left by an lre that was killed (it could not clean
 * up). rmdir only succeeds on cgroups without tasks, so a live run's cgroup
 * can never be removed from under it.
 */
function sweepStaleCgroups(parent: string): void {
  if (sweptCgroupParents.has(parent)) return;
  sweptCgroupParents.add(parent);
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^lre-(\d+)-\d+$/.exec(name);
    if (!m || Number(m[1]) === process.pid || existsSync(`/proc/${m[1]}`)) continue;
    try {
      rmdirSync(join(parent, name));
    } catch {
      // still has tasks, or already gone
    }
  }
}

let pidsCgroupDirCache: { dir: string | undefined } | undefined;

/** A writable directory under which per-run pids cgroups can be created (looked up once). */
export function findPidsCgroupDir(): string | undefined {
  pidsCgroupDirCache ??= { dir: lookUpPidsCgroupDir() };
  return pidsCgroupDirCache.dir;
}

function lookUpPidsCgroupDir(): string | undefined {
  const candidates: string[] = [];
  let own: { v1?: string; v2?: string } = {};
  try {
    for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
      const [, controllers, path] = line.split(":");
      if (controllers === undefined || path === undefined) continue;
      if (controllers.split(",").includes("pids")) own = { ...own, v1: path };
      if (controllers === "") own = { ...own, v2: path };
    }
  } catch {
    return undefined;
  }
  if (own.v1 !== undefined) candidates.push(join("/sys/fs/cgroup/pids", own.v1), "/sys/fs/cgroup/pids");
  if (own.v2 !== undefined) {
    // v2 allows children with controllers only where subtree_control enables
    // them, and (except at the root) no processes of ours may sit there.
    for (const dir of [join("/sys/fs/cgroup", own.v2), "/sys/fs/cgroup"]) {
      try {
        if (readFileSync(join(dir, "cgroup.subtree_control"), "utf8").split(/\s+/).includes("pids")) candidates.push(dir);
      } catch {
        // not a cgroup2 mount
      }
    }
  }
  for (const dir of candidates) {
    try {
      if (!existsSync(join(dir, "cgroup.procs"))) continue;
      accessSync(dir, fsc.W_OK);
      return dir;
    } catch {
      // not writable: try the next
    }
  }
  return undefined;
}

/**
 * Emptied per-run cgroups, kept for the next run. Creating and removing a
 * cgroup directory costs about a millisecond each, synchronously, on the
 * event loop every action shares (seen in a profile of the Execute path);
 * a kept one costs nothing. Left behind at exit, they are empty and the
 * next lre's sweep removes them.
 */
const idleCgroups = new Map<string, string[]>();
/** The pids.max last written to each cgroup lre made. */
const cgroupMax = new Map<string, number>();
const MAX_IDLE_CGROUPS = 64;

/** Removes the kept cgroups (at shutdown; a run still under way keeps its own). */
export function removeIdleCgroups(): void {
  for (const idle of idleCgroups.values()) {
    for (const dir of idle.splice(0)) {
      try {
        rmdirSync(dir);
        cgroupMax.delete(dir);
      } catch {
        // the next lre's sweep removes it
      }
    }
  }
}

function takeCgroup(parent: string): string {
  const idle = idleCgroups.get(parent)?.pop();
  if (idle !== undefined) return idle;
  sweepStaleCgroups(parent);
  const dir = join(parent, `lre-${process.pid}-${++cgroupSeq}`);
  mkdirSync(dir);
  return dir;
}

/** Returns a run's cgroup to the pool once no live task is left in it; removes it if the pool is full. */
async function releaseCgroup(parent: string, dir: string): Promise<void> {
  // Normally empty at once: the namespace's tasks are gone when bwrap has exited.
  const deadline = Date.now() + 1000;
  for (let wait = 0.25; ; wait = Math.min(10, wait * 2)) {
    let empty: boolean;
    try {
      // cgroup.procs lists live tasks only; exited ones not yet reaped are
      // still charged in pids.current, which takeCgroup's caller allows for.
      empty = readFileSync(join(dir, "cgroup.procs"), "utf8").trim() === "";
    } catch {
      cgroupMax.delete(dir);
      return; // removed from under us
    }
    if (empty) {
      const idle = idleCgroups.get(parent) ?? [];
      idleCgroups.set(parent, idle);
      if (idle.length < MAX_IDLE_CGROUPS) {
        idle.push(dir);
        return;
      }
      try {
        rmdirSync(dir);
        cgroupMax.delete(dir);
      } catch {
        // a later run's sweep removes it
      }
      return;
    }
    if (Date.now() > deadline) return; // never reused; a later run's sweep removes it
    await Bun.sleep(wait);
  }
}

/** Signals every process in the sandbox's pid namespace except its pid 1. */
function signalNamespace(pidNs: number, initPid: number, sig: NodeJS.Signals): void {
  const want = `pid:[${pidNs}]`;
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === initPid) continue;
    try {
      if (readlinkSync(`/proc/${pid}/ns/pid`) === want) trySignal(pid, sig);
    } catch {
      // exited meanwhile
    }
  }
}

function trySignal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function tryClose(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

function signalNumber(sig: number | NodeJS.Signals): number {
  return typeof sig === "number" ? sig : osc.signals[sig];
}

function signalName(n: number): string | undefined {
  for (const [name, num] of Object.entries(osc.signals)) if (num === n) return name;
  return undefined;
}
