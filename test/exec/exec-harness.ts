import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClosureResolver } from "../../sandbox/mod";
import { ClosureCheckingActionCache } from "../../src/ac/closure-checking-action-cache";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { LocalExecutor } from "../../src/exec/local-executor";
import { sandboxRuntime } from "../../src/exec/sandbox-runtime";
import { Scheduler } from "../../src/exec/scheduler";
import { type ActionExecutor, type ExecutionOutcome, createExecutionService } from "../../src/grpc/execution-service";
import { startServer, type RunningServer } from "../../src/grpc/server";
import { type ReapiClients, createClients } from "../support/grpc-client";
import { type NixToolchain, ensureNixToolchain } from "../support/nix-fixture";

/**
 * A real lre execution stack for end-to-end tests: in-memory storage (the
 * subject here is execution, not persistence), the real executor, real
 * bubblewrap and the Nix fixture toolchain, served over a Unix socket.
 */
export interface ExecHarness {
  readonly dir: string;
  readonly dataDir: string;
  readonly cas: MemoryBlobStore;
  readonly ac: MemoryActionCache;
  readonly executor: LocalExecutor;
  readonly scheduler: Scheduler<ExecutionOutcome>;
  readonly server: RunningServer;
  readonly clients: ReapiClients;
  readonly socketPath: string;
  readonly toolchain: NixToolchain;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly jobs?: number;
  /** Reuse a data dir (a restart); the harness then leaves it in place on close. */
  readonly dataDir?: string;
  /** Where closure views go. @default <dataDir>/closures */
  readonly viewsDir?: string;
  /** @default the fixture's toolchain A */
  readonly defaultClosureRoots?: readonly string[];
  readonly fileCacheOwner?: number | null;
  readonly maxRetainedTreeNodes?: number;
  /** A shared action cache (e.g. to survive a harness restart). */
  readonly ac?: MemoryActionCache;
  readonly defaultTimeoutMs?: number;
  readonly maxTimeoutMs?: number;
  readonly progressIntervalMs?: number;
  /** A shared CAS (e.g. to survive a harness restart). */
  readonly cas?: MemoryBlobStore;
  /** Cap on each of stdout and stderr (LocalExecutorOptions.maxStdStreamBytes). */
  readonly maxStdStreamBytes?: number;
  /**
   * What the Execution service gets instead of the executor itself: a
   * decorator that injects a fault or a delay on purpose. The real executor
   * still does all the work.
   */
  readonly wrapExecutor?: (executor: LocalExecutor) => ActionExecutor;
}

export async function startExecHarness(options: HarnessOptions = {}): Promise<ExecHarness> {
  const toolchain = await ensureNixToolchain();
  const dir = mkdtempSync(join(tmpdir(), "lre-exec-"));
  const dataDir = options.dataDir ?? join(dir, "data");
  const cas = options.cas ?? new MemoryBlobStore();
  const ac = options.ac ?? new MemoryActionCache();
  const executor = new LocalExecutor({
    cas,
    dataDir,
    closures: new ClosureResolver(),
    sandbox: sandboxRuntime({ viewsDir: options.viewsDir ?? join(dataDir, "closures") }),
    defaultClosureRoots: options.defaultClosureRoots ?? [toolchain.toolchainA],
    ...(options.fileCacheOwner === undefined ? {} : { fileCacheOwner: options.fileCacheOwner }),
    ...(options.maxRetainedTreeNodes === undefined ? {} : { maxRetainedTreeNodes: options.maxRetainedTreeNodes }),
    defaultTimeoutMs: options.defaultTimeoutMs ?? 60_000,
    maxTimeoutMs: options.maxTimeoutMs ?? 600_000,
    killGraceMs: 500,
    workerName: "lre-test-worker",
    ...(options.maxStdStreamBytes === undefined ? {} : { maxStdStreamBytes: options.maxStdStreamBytes }),
  });
  const scheduler = new Scheduler<ExecutionOutcome>({ jobs: options.jobs ?? 4 });
  const digests = { defaultDigestFn: "sha256" as const };
  const service = createExecutionService({
    cas,
    ac,
    executor: options.wrapExecutor?.(executor) ?? executor,
    scheduler,
    digests,
    progressIntervalMs: options.progressIntervalMs ?? 10_000,
  });
  const socketPath = join(dir, "lre.sock");
  // As `lre serve` wires it: GetActionResult hides results of another default closure.
  const servedAc = new ClosureCheckingActionCache(ac, () => executor.currentDefaultClosureHash());
  const server = await startServer({ cas, ac: servedAc, digests, execEnabled: true, extraServices: [service], listen: { socketPath } });
  const clients = createClients(socketPath);
  return {
    dir,
    dataDir,
    cas,
    ac,
    executor,
    scheduler,
    server,
    clients,
    socketPath,
    toolchain,
    close: async () => {
      clients.close();
      await server.shutdown(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
