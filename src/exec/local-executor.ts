import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { actionSandboxSpec, removeTree } from "../../sandbox/mod";
import type { Closure, SandboxSpec } from "../../sandbox/spec";
import type { BlobStore } from "../cas/blob-store";
import type { Clock } from "../clock";
import { systemClock } from "../clock";
import type { Digest } from "../digest/digest";
import { emptyDigest, toWire } from "../digest/digest";
import { GrpcCode, RpcError } from "../errors";
import { toStatusProto } from "../grpc/status";
import type {
  ActionResult,
  ExecutedActionMetadata,
  ExecuteResponse,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Timestamp } from "../proto/google/protobuf/timestamp";
import type { ClosureRoots, ClosureSource } from "./closure-for-action";
import {
  closureRootsFor,
  defaultClosureRoots,
  resolveClosure,
  resolveDefaultClosure,
  undeclaredPathsMessage,
  undeclaredStorePaths,
} from "./closure-for-action";
import type { DeclaredOutput, OutputLimits } from "./collect-outputs";
import { DEFAULT_OUTPUT_LIMITS, InlineBudget, MAX_INLINE_RESPONSE_BYTES, OutputBudget, collectOutputs, declaredOutputs, uploadFile } from "./collect-outputs";
import { DiskFloorGuard } from "./disk-floor";
import type { DiskFloorOptions, WatchedRun } from "./disk-floor";
import { CacheLease, FileCache } from "./file-cache";
import type { ActionInputs, InputTree, InputTreeLimits } from "./input-tree";
import { DEFAULT_INPUT_TREE_LIMITS, loadActionInputs, missingError, walkInputTree } from "./input-tree";
import { Semaphore } from "./pool";
import { extraDirectories, stageInputs, unlinkSharedInputs } from "./stage-inputs";
import type { StagedInputs } from "./stage-inputs";

/** What the sandbox library must provide; `sandboxRuntime()` in sandbox-runtime.ts binds the real one. */
export interface SandboxRuntime {
  /** A directory holding exactly the closure, to bind read-only at /nix/store. */
  closureView(closure: Closure): Promise<string>;
  run(spec: SandboxSpec, options: SandboxRunOptions): Promise<SandboxRunResult>;
}

export interface SandboxRunOptions {
  readonly stdoutPath: string;
  readonly stderrPath: string;
  readonly timeoutMs: number;
  readonly killGraceMs?: number;
  readonly maxOutputBytes?: number;
  /** A stream that stays empty leaves no file at its path; the path must not exist beforehand. */
  readonly lazyStreamFiles?: boolean;
  /** Aborting kills the sandbox at once (no grace period). */
  readonly signal?: AbortSignal;
}

export interface SandboxRunResult {
  readonly exitCode: number;
  readonly signal?: string;
  readonly timedOut: boolean;
  readonly outputLimitExceeded?: boolean;
  /** Killed because `signal` fired. */
  readonly aborted?: boolean;
  readonly wallMs: number;
}

export interface LocalExecutorOptions {
  readonly cas: BlobStore;
  /** lre's data directory; actions run in `<dataDir>/exec/<id>/`, the file cache is `<dataDir>/filecache/`. */
  readonly dataDir: string;
  readonly closures: ClosureSource;
  readonly sandbox: SandboxRuntime;
  /** Closure roots for actions that declare none (`--closure`). */
  readonly defaultClosureRoots: readonly string[];
  /** Applied when Action.timeout is unset. @default 15 minutes */
  readonly defaultTimeoutMs?: number;
  /** Larger Action.timeout values are INVALID_ARGUMENT. @default 3 hours */
  readonly maxTimeoutMs?: number;
  /** Between SIGTERM and SIGKILL on timeout. @default 5 s */
  readonly killGraceMs?: number;
  /** Size of the sandbox's private /tmp. @default 1 GiB */
  readonly tmpSizeBytes?: number;
  /** Cap on each of stdout and stderr. @default 1 GiB */
  readonly maxStdStreamBytes?: number;
  readonly outputLimits?: OutputLimits;
  readonly inputLimits?: InputTreeLimits;
  /** ExecutedActionMetadata.worker. @default "lre@<hostname>" */
  readonly workerName?: string;
  readonly clock?: Clock;
  /** Keep exec dirs of failed actions for inspection. @default false */
  readonly keepFailedDirs?: boolean;
  /**
   * Owner uid of file-cache entries; null keeps lre's own. As root the
   * default (65534) is a uid the sandbox does not map, so actions cannot
   * change shared inputs. @default 65534 as root, else lre's own uid
   */
  readonly fileCacheOwner?: number | null;
  /** Prepares (Action, Command and input tree reads) running at once. @default 16 */
  readonly maxConcurrentPrepares?: number;
  /**
   * Flattened input trees kept for queued actions, in files, directories and
   * symlinks over all of them; beyond it a queued action keeps only its root
   * digest and its tree is read again when it starts. @default 2,000,000
   */
  readonly maxRetainedTreeNodes?: number;
  /**
   * Free space kept on the data dir's disk while actions run (see
   * disk-floor.ts). @default defaultDiskFloor: 2% of the filesystem, at least
   * 1 GiB, at most a tenth of it
   */
  readonly diskFloor?: Omit<DiskFloorOptions, "dir">;
}

/** What Execute asked for besides the action itself. */
export interface ExecuteTask {
  readonly instance: string;
  readonly actionDigest: Digest;
  readonly skipCacheLookup?: boolean;
  readonly inlineStdout?: boolean;
  readonly inlineStderr?: boolean;
  readonly inlineOutputFiles?: readonly string[];
}

/** Everything checked and resolved before an action is queued. */
export interface PreparedAction {
  readonly task: ExecuteTask;
  /** Action and Command; the input tree lives in `tree` while retained. */
  readonly inputs: Omit<ActionInputs, "tree">;
  /** The validated, flattened input tree, dropped while queued when memory for trees runs short. */
  readonly tree: RetainedTree;
  readonly outputs: readonly DeclaredOutput[];
  readonly extraDirs: readonly string[];
  readonly roots: ClosureRoots;
  readonly closure: Closure;
  readonly timeoutMs: number;
  readonly doNotCache: boolean;
  /**
   * Set when the server's default roots (`--closure`) are among the action's
   * roots; they are not part of the action digest. Identifies the default
   * closure alone (what else the action names is in its digest already), so a
   * result is recorded with the toolchain that made it and compares equal to
   * currentDefaultClosureHash() while the server runs with that default.
   */
  readonly defaultClosureHash?: string;
}

/** A prepared action's input tree, or (after it was dropped) what is needed to read it again. */
export interface RetainedTree {
  tree: InputTree | undefined;
  readonly rootDigest: Digest | undefined;
  readonly nodes: number;
}

/** What the scheduler carries for each operation: the response plus what WaitExecution must report. */
export interface ExecutionOutcome {
  readonly actionDigest: Digest;
  readonly response: ExecuteResponse;
}

export interface RunHooks {
  /** When the action entered the queue (ExecutedActionMetadata.queued_timestamp). */
  readonly queuedAtMs?: number;
  /** Called as the sandboxed process starts. */
  readonly onExecuting?: () => void;
}

/** Inside the sandbox the input root always sits here, so paths in outputs and logs are stable. */
export const SANDBOX_ROOT = "/build/root";

const MINUTE = 60_000;

/**
 * Runs one action in four phases, each its own module: prepare (input-tree,
 * closure-for-action; all failures are gRPC errors, before anything is queued)
 * → stage (stage-inputs) → run (the sandbox, described as data) → upload
 * (collect-outputs) → cleanup. After prepare, every outcome is an
 * ExecuteResponse that carries a result, because both Bazel and Buck2 treat a
 * response without one as a protocol failure.
 */
export class LocalExecutor {
  readonly workerName: string;
  readonly fileCache: FileCache;
  private readonly clock: Clock;
  private readonly defaultTimeoutMs: number;
  private readonly maxTimeoutMs: number;
  private readonly prepares: Semaphore;
  private readonly maxRetainedTreeNodes: number;
  private retainedTreeNodes = 0;
  /** Closure hashes of actions between staging and cleanup: view collection must spare them. */
  private readonly viewsInUse = new Map<string, number>();
  private seq = 0;
  /** PATH built from a closure's bin directories, by closure hash and roots. */
  private readonly closurePaths = new Map<string, string>();
  private readonly diskFloor: DiskFloorGuard;

  constructor(private readonly opts: LocalExecutorOptions) {
    this.clock = opts.clock ?? systemClock;
    this.workerName = opts.workerName ?? `lre@${hostname()}`;
    this.fileCache = new FileCache(
      join(opts.dataDir, "filecache"),
      opts.cas,
      opts.fileCacheOwner === undefined ? {} : { entryOwner: opts.fileCacheOwner ?? undefined },
    );
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 15 * MINUTE;
    this.maxTimeoutMs = opts.maxTimeoutMs ?? 180 * MINUTE;
    this.prepares = new Semaphore(opts.maxConcurrentPrepares ?? 16);
    this.maxRetainedTreeNodes = opts.maxRetainedTreeNodes ?? 2_000_000;
    this.diskFloor = new DiskFloorGuard({ ...opts.diskFloor, dir: opts.dataDir });
  }

  /** Phase one: fetch and validate everything; throws RpcError for anything the client must fix. */
  prepare(task: ExecuteTask): Promise<PreparedAction> {
    // Bounded: every prepare holds a whole decoded input tree in memory.
    return this.prepares.run(() => this.prepareNow(task));
  }

  private async prepareNow(task: ExecuteTask): Promise<PreparedAction> {
    const { tree, ...inputs } = await loadActionInputs(this.opts.cas, task.actionDigest, this.opts.inputLimits ?? DEFAULT_INPUT_TREE_LIMITS);
    const { action, command } = inputs;
    if (command.arguments.length === 0 || command.arguments[0] === "") {
      throw RpcError.invalidArgument("Command.arguments is empty; an action needs a program to run");
    }
    checkArgvAndEnv(command.arguments, command.environmentVariables);
    const outputs = declaredOutputs(command);
    const extraDirs = extraDirectories(command, tree);
    const timeoutMs = this.timeoutOf(action.timeout);
    const roots = closureRootsFor(action, command, this.opts.defaultClosureRoots);
    if (roots.roots.length === 0) {
      throw RpcError.failedPrecondition(
        `the action declares no Nix closure and the server has no default; set the platform property "nix-closure" to the store paths it needs, or start lre with --closure`,
      );
    }
    const closure = resolveClosure(this.opts.closures, roots);
    const nodes = tree.files.length + tree.directories.length + tree.symlinks.length;
    const rootDigest = action.inputRootDigest === undefined ? undefined : { fn: task.actionDigest.fn, hash: action.inputRootDigest.hash, sizeBytes: action.inputRootDigest.sizeBytes };
    const retained: RetainedTree = { tree, rootDigest, nodes };
    this.retainedTreeNodes += nodes;
    return {
      task,
      inputs,
      tree: retained,
      outputs,
      extraDirs,
      roots,
      closure,
      timeoutMs,
      doNotCache: action.doNotCache,
      ...(roots.defaults.length > 0
        ? { defaultClosureHash: defaultClosureHash(roots.defaults, resolveDefaultClosure(this.opts.closures, roots)) }
        : {}),
    };
  }

  /**
   * Called once a prepared action is queued behind others: when trees of
   * queued actions exceed their budget, this one keeps only its root digest.
   */
  queued(prepared: PreparedAction): void {
    if (this.retainedTreeNodes > this.maxRetainedTreeNodes) this.dropTree(prepared);
  }

  /** For a prepared action that will never run (it joined an identical one in flight). */
  discard(prepared: PreparedAction): void {
    this.dropTree(prepared);
  }

  private dropTree(prepared: PreparedAction): void {
    if (prepared.tree.tree === undefined) return;
    prepared.tree.tree = undefined;
    this.retainedTreeNodes -= prepared.tree.nodes;
  }

  private async takeTree(prepared: PreparedAction): Promise<InputTree> {
    const kept = prepared.tree.tree;
    if (kept !== undefined) {
      this.dropTree(prepared);
      return kept;
    }
    const root = prepared.tree.rootDigest;
    if (root === undefined) return { directories: [], files: [], symlinks: [], fileDigests: [] };
    const { tree, missing } = await walkInputTree(this.opts.cas, root, this.opts.inputLimits ?? DEFAULT_INPUT_TREE_LIMITS);
    if (missing.length > 0) throw missingError(missing);
    return tree;
  }

  /**
   * The hash recorded with results of actions that use the server's default
   * closure; undefined when there is none (or it does not resolve now), so
   * that every such recorded result is stale.
   */
  currentDefaultClosureHash(): string | undefined {
    const roots = defaultClosureRoots(this.opts.defaultClosureRoots);
    if (roots.length === 0) return undefined;
    try {
      return defaultClosureHash(roots, this.opts.closures.resolve(roots));
    } catch {
      return undefined;
    }
  }

  /** Hashes of closures whose views running actions use or are about to use. */
  closureViewsInUse(): ReadonlySet<string> {
    return new Set(this.viewsInUse.keys());
  }

  /** Phases two to five. Never throws for action-level problems; they land in the response status. */
  async execute(prepared: PreparedAction, hooks: RunHooks = {}): Promise<ExecuteResponse> {
    const meta = new Timeline(this.clock, this.workerName, hooks.queuedAtMs);
    const dir = join(this.opts.dataDir, "exec", `${process.pid}-${++this.seq}-${prepared.task.actionDigest.hash.slice(0, 12)}`);
    const root = join(dir, "root");
    const lease = new CacheLease();
    const viewKey = prepared.closure.hash;
    this.viewsInUse.set(viewKey, (this.viewsInUse.get(viewKey) ?? 0) + 1);
    let staged: StagedInputs | undefined;
    let keep = false;
    let response: ExecuteResponse;
    let watched: WatchedRun | undefined;
    try {
      meta.mark("workerStart");
      meta.mark("inputFetchStart");
      let view: string;
      try {
        // Staging writes to the same disk; a disk already below the floor would only fail later, less clearly.
        await this.diskFloor.admit();
        const tree = await this.takeTree(prepared);
        await mkdir(dir, { recursive: true });
        // Both are awaited even when one fails early, so neither is still
        // writing into the exec dir when it is removed.
        const [s, v] = await Promise.allSettled([
          stageInputs(tree, root, prepared.extraDirs, this.fileCache, this.opts.cas, lease),
          this.opts.sandbox.closureView(prepared.closure),
        ]);
        if (s.status === "fulfilled") staged = s.value;
        if (s.status === "rejected") throw s.reason;
        if (v.status === "rejected") throw v.reason;
        view = v.value;
      } catch (err) {
        meta.mark("inputFetchCompleted");
        return (response = failure(err, "staging the action's inputs failed", meta));
      }
      meta.mark("inputFetchCompleted");

      const spec = this.sandboxSpec(prepared, root, view);
      const stdoutPath = join(dir, "stdout");
      const stderrPath = join(dir, "stderr");
      meta.mark("executionStart");
      hooks.onExecuting?.();
      const kill = new AbortController();
      let stoppedFor: RpcError | undefined;
      watched = this.diskFloor.watch(dir, (reason) => {
        stoppedFor = reason;
        kill.abort();
      });
      const sandboxRun = await this.opts.sandbox.run(spec, {
        stdoutPath,
        stderrPath,
        timeoutMs: prepared.timeoutMs,
        killGraceMs: this.opts.killGraceMs ?? 5_000,
        maxOutputBytes: this.opts.maxStdStreamBytes ?? 1024 * 1024 * 1024,
        lazyStreamFiles: true,
        signal: kill.signal,
      });
      watched.ended();
      meta.mark("executionCompleted");
      // Only when the kill is what ended it: a stop that lands after the exit changes nothing.
      const diskStop = sandboxRun.aborted === true ? stoppedFor : undefined;

      meta.mark("outputUploadStart");
      response = await this.upload(prepared, sandboxRun, diskStop, root, stdoutPath, stderrPath, staged!, lease, meta);
      // The dir of an action stopped for space is removed regardless: keeping it would keep the disk full.
      keep = (this.opts.keepFailedDirs ?? false) && diskStop === undefined && (response.result?.exitCode !== 0 || response.status !== undefined);
      return response;
    } catch (err) {
      return (response = failure(err, "running the action failed", meta));
    } finally {
      if (!keep) {
        if (staged !== undefined) await unlinkSharedInputs(dir, staged, this.fileCache).catch(() => undefined);
        await removeTree(dir);
      }
      watched?.release();
      // A modification found by another action while this one cleaned up still counts.
      if (lease.modified.length > 0 && response!.status === undefined) {
        const err = modifiedInputError(lease);
        response!.status = toStatusProto(err);
        response!.message = [err.message, response!.message].filter((m) => m !== "").join("\n");
      }
      this.fileCache.release(lease);
      const n = (this.viewsInUse.get(viewKey) ?? 1) - 1;
      if (n <= 0) this.viewsInUse.delete(viewKey);
      else this.viewsInUse.set(viewKey, n);
    }
  }

  private async upload(
    prepared: PreparedAction,
    run: SandboxRunResult,
    diskStop: RpcError | undefined,
    root: string,
    stdoutPath: string,
    stderrPath: string,
    staged: StagedInputs,
    lease: CacheLease,
    meta: Timeline,
  ): Promise<ExecuteResponse> {
    const { task, inputs } = prepared;
    const fn = task.actionDigest.fn;
    const limits = this.opts.outputLimits ?? DEFAULT_OUTPUT_LIMITS;
    const budget = new OutputBudget(limits.maxOutputBytes);
    // One budget for everything inlined in this response, as GetActionResult has.
    const inlineBudget = new InlineBudget(Math.min(MAX_INLINE_RESPONSE_BYTES, limits.maxInlineBytes));
    const result: ActionResult = emptyResult(run.exitCode);
    let status: RpcError | undefined;
    const messages: string[] = [];

    // The streams first: they are what a user needs most when anything else goes wrong.
    for (const [path, inline, set] of [
      [stdoutPath, task.inlineStdout ?? false, (d: Digest, raw?: Uint8Array) => { result.stdoutDigest = toWire(d); if (raw) result.stdoutRaw = Buffer.from(raw); }],
      [stderrPath, task.inlineStderr ?? false, (d: Digest, raw?: Uint8Array) => { result.stderrDigest = toWire(d); if (raw) result.stderrRaw = Buffer.from(raw); }],
    ] as const) {
      // No file: the stream stayed empty (lazyStreamFiles); the empty blob is always present.
      if (!existsSync(path)) {
        set(emptyDigest(fn));
        continue;
      }
      const f = await uploadFile(this.opts.cas, fn, path, budget, "the action's standard streams", inline ? limits.maxInlineBytes : 0);
      set(f.digest, f.bytes !== undefined && inlineBudget.take(f.bytes.byteLength) ? f.bytes : undefined);
    }

    // After a stop for disk space the outputs are what filled the disk;
    // copying them into the CAS, on the same disk, would undo the stop.
    if (diskStop === undefined) {
      try {
        const outputs = await collectOutputs(
          this.opts.cas,
          {
            root,
            workingDirectory: inputs.command.workingDirectory,
            outputs: prepared.outputs,
            fn,
            inlineOutputFiles: task.inlineOutputFiles ?? [],
            inlineBudget,
            sandboxRoot: SANDBOX_ROOT,
          },
          budget,
          limits,
        );
        Object.assign(result, outputs);
      } catch (err) {
        status = err instanceof RpcError ? err : RpcError.internal(`collecting outputs failed: ${String(err)}`, err);
      }
    }

    await this.fileCache.checkAfterRun(staged.shared);
    if (lease.modified.length > 0) status = modifiedInputError(lease);
    if (run.outputLimitExceeded) {
      status ??= RpcError.resourceExhausted(
        `the action wrote more than ${this.opts.maxStdStreamBytes ?? 1024 * 1024 * 1024} bytes to stdout or stderr and was stopped`,
      );
    }
    if (run.timedOut) {
      const s = prepared.timeoutMs / 1000;
      status = new RpcError(
        GrpcCode.DEADLINE_EXCEEDED,
        `the action ran longer than its timeout of ${s} s and was killed; its output so far is in the result. Raise Action.timeout if it needs longer`,
      );
      messages.push(status.message);
    }
    if (diskStop !== undefined) {
      status = diskStop;
      messages.push(status.message);
    }
    if (run.exitCode !== 0 || run.timedOut) {
      const stderrTail = await readTail(stderrPath, 64 * 1024);
      const texts = [...inputs.command.arguments, ...inputs.command.environmentVariables.map((e) => e.value), stderrTail];
      const hint = undeclaredPathsMessage(undeclaredStorePaths(prepared.closure, texts));
      if (hint !== "") messages.push(hint);
    }
    if (status !== undefined && !messages.includes(status.message)) messages.unshift(status.message);

    meta.mark("outputUploadCompleted");
    meta.mark("workerCompleted");
    result.executionMetadata = meta.toProto(run.wallMs);
    return {
      result,
      cachedResult: false,
      status: status === undefined ? undefined : toStatusProto(status),
      serverLogs: {},
      message: messages.join("\n"),
    };
  }

  private sandboxSpec(prepared: PreparedAction, root: string, view: string): SandboxSpec {
    const { command } = prepared.inputs;
    const env: Record<string, string> = {};
    for (const e of command.environmentVariables) env[e.name] = e.value;
    // Buck2 sends no PATH unless the user sets one (buck2#532). Without it a
    // bare `sh` in argv[0] could not be found, so lre builds one from the
    // `bin` directories of the closure, declared roots first. A PATH the
    // client does send is used exactly as given.
    if (!("PATH" in env)) env.PATH = this.closurePath(prepared.roots, prepared.closure);
    return actionSandboxSpec({
      closureView: view,
      inputRoot: root,
      inputRootTarget: SANDBOX_ROOT,
      workingDirectory: command.workingDirectory,
      argv: command.arguments,
      env,
      tmpSizeBytes: this.opts.tmpSizeBytes ?? 1024 * 1024 * 1024,
      network: "none",
      hostname: "lre",
    });
  }

  /**
   * closurePath stats every store path of the closure (2.5-3.3 ms per action
   * for 1,000 paths, on the event loop); store paths are immutable, so the
   * result is kept per roots and closure.
   */
  private closurePath(roots: ClosureRoots, closure: Closure): string {
    const key = `${closure.hash}\0${roots.roots.join("\0")}`;
    let path = this.closurePaths.get(key);
    if (path === undefined) {
      path = closurePath(roots, closure);
      if (this.closurePaths.size >= 256) this.closurePaths.delete(this.closurePaths.keys().next().value!);
      this.closurePaths.set(key, path);
    }
    return path;
  }

  private timeoutOf(d: { seconds: number; nanos: number } | undefined): number {
    if (d === undefined || (d.seconds === 0 && d.nanos === 0)) return this.defaultTimeoutMs;
    const ms = d.seconds * 1000 + Math.floor(d.nanos / 1e6);
    if (ms < 0) throw RpcError.invalidArgument(`Action.timeout is negative (${d.seconds} s)`);
    if (ms > this.maxTimeoutMs) {
      throw RpcError.invalidArgument(
        `Action.timeout of ${ms / 1000} s exceeds this server's maximum of ${this.maxTimeoutMs / 1000} s; ask for less`,
      );
    }
    return ms;
  }
}

function closurePath(roots: ClosureRoots, closure: Closure): string {
  const rootSet = new Set(roots.roots);
  const inClosure = new Set(closure.paths);
  const ordered = [...roots.roots.filter((r) => inClosure.has(r)), ...closure.paths.filter((p) => !rootSet.has(p))];
  return ordered.map((p) => `${p}/bin`).filter((b) => existsSync(b)).join(":");
}

function emptyResult(exitCode: number): ActionResult {
  return {
    outputFiles: [],
    outputDirectories: [],
    exitCode,
    stdoutRaw: Buffer.alloc(0),
    stdoutDigest: undefined,
    stderrRaw: Buffer.alloc(0),
    stderrDigest: undefined,
    executionMetadata: undefined,
    outputFileSymlinks: [],
    outputDirectorySymlinks: [],
    outputSymlinks: [],
  };
}

/** A response for a failure after prepare: a non-OK status and, still, a result. */
function failure(err: unknown, context: string, meta: Timeline): ExecuteResponse {
  const rpc = err instanceof RpcError ? err : RpcError.internal(`${context}: ${err instanceof Error ? err.message : String(err)}`, err);
  const result = emptyResult(0);
  meta.mark("workerCompleted");
  result.executionMetadata = meta.toProto(0);
  return { result, cachedResult: false, status: toStatusProto(rpc), serverLogs: {}, message: rpc.message };
}

type Stamp =
  | "workerStart"
  | "inputFetchStart"
  | "inputFetchCompleted"
  | "executionStart"
  | "executionCompleted"
  | "outputUploadStart"
  | "outputUploadCompleted"
  | "workerCompleted";

/** Collects the phase timestamps of ExecutedActionMetadata. */
class Timeline {
  private readonly stamps = new Map<Stamp, number>();
  constructor(
    private readonly clock: Clock,
    private readonly worker: string,
    private readonly queuedAtMs: number | undefined,
  ) {}
  mark(s: Stamp): void {
    this.stamps.set(s, this.clock.nowMs());
  }
  toProto(wallMs: number): ExecutedActionMetadata {
    const ts = (s: Stamp): Timestamp | undefined => {
      const ms = this.stamps.get(s);
      return ms === undefined ? undefined : toTimestamp(ms);
    };
    return {
      worker: this.worker,
      queuedTimestamp: this.queuedAtMs === undefined ? undefined : toTimestamp(this.queuedAtMs),
      workerStartTimestamp: ts("workerStart"),
      workerCompletedTimestamp: ts("workerCompleted"),
      inputFetchStartTimestamp: ts("inputFetchStart"),
      inputFetchCompletedTimestamp: ts("inputFetchCompleted"),
      executionStartTimestamp: ts("executionStart"),
      executionCompletedTimestamp: ts("executionCompleted"),
      outputUploadStartTimestamp: ts("outputUploadStart"),
      outputUploadCompletedTimestamp: ts("outputUploadCompleted"),
      auxiliaryMetadata: [],
      virtualExecutionDuration: wallMs > 0 ? { seconds: Math.floor(wallMs / 1000), nanos: Math.round((wallMs % 1000) * 1e6) } : undefined,
    };
  }
}

export function toTimestamp(ms: number): Timestamp {
  return { seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) };
}

async function readTail(path: string, bytes: number): Promise<string> {
  try {
    const fh = await open(path, "r");
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, bytes);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString("utf8");
    } finally {
      await fh.close();
    }
  } catch {
    return "";
  }
}

export { removeTree };

/** What every action told about a shared input modified in place gets: not cached, and why. */
function modifiedInputError(lease: CacheLease): RpcError {
  const d = lease.modified[0]!;
  return RpcError.failedPrecondition(
    `an action modified an input file in place (digest ${d.hash}${lease.modified.length > 1 ? ` and ${lease.modified.length - 1} more` : ""}) ` +
      `while this action was using it; inputs are hardlinks shared read-only by all running actions, so every action using it failed and none of their results was cached. ` +
      `Make the action write its outputs to new files instead of changing its inputs, then retry`,
  );
}

/** Values bubblewrap and execve cannot take; refused up front instead of failing at run time. */
function checkArgvAndEnv(argv: readonly string[], env: readonly { name: string; value: string }[]): void {
  argv.forEach((a, i) => {
    if (a.includes("\0")) throw RpcError.invalidArgument(`Command.arguments[${i}] contains a NUL character, which no program can receive`);
  });
  const seen = new Set<string>();
  for (const { name, value } of env) {
    if (name === "" || name.includes("=") || name.includes("\0")) {
      throw RpcError.invalidArgument(
        `Command.environment_variables has the name ${JSON.stringify(name)}; names must be non-empty and contain neither "=" nor NUL`,
      );
    }
    if (value.includes("\0")) throw RpcError.invalidArgument(`the value of environment variable "${name}" contains a NUL character`);
    if (seen.has(name)) throw RpcError.invalidArgument(`Command.environment_variables sets "${name}" more than once`);
    seen.add(name);
  }
}

/** Identifies a default closure and the PATH derived from it (roots order included). */
function defaultClosureHash(defaultRoots: readonly string[], closure: Closure): string {
  return createHash("sha256").update(`${defaultRoots.join("\n")}\0${closure.hash}`).digest("hex").slice(0, 32);
}
