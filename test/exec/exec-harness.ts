import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClosureResolver } from "../../sandbox/mod";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { LocalExecutor } from "../../src/exec/local-executor";
import { sandboxRuntime } from "../../src/exec/sandbox-runtime";
import { Scheduler } from "../../src/exec/scheduler";
import { type ExecutionOutcome, createExecutionService } from "../../src/grpc/execution-service";
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
  readonly defaultTimeoutMs?: number;
  readonly maxTimeoutMs?: number;
  readonly progressIntervalMs?: number;
}

export async function startExecHarness(options: HarnessOptions = {}): Promise<ExecHarness> {
  const toolchain = await ensureNixToolchain();
  const dir = mkdtempSync(join(tmpdir(), "lre-exec-"));
  const dataDir = join(dir, "data");
  const cas = new MemoryBlobStore();
  const ac = new MemoryActionCache();
  const executor = new LocalExecutor({
    cas,
    dataDir,
    closures: new ClosureResolver(),
    sandbox: sandboxRuntime({ viewsDir: join(dataDir, "closures") }),
    defaultClosureRoots: [toolchain.toolchainA],
    defaultTimeoutMs: options.defaultTimeoutMs ?? 60_000,
    maxTimeoutMs: options.maxTimeoutMs ?? 600_000,
    killGraceMs: 500,
    workerName: "lre-test-worker",
  });
  const scheduler = new Scheduler<ExecutionOutcome>({ jobs: options.jobs ?? 4 });
  const digests = { defaultDigestFn: "sha256" as const };
  const service = createExecutionService({
    cas,
    ac,
    executor,
    scheduler,
    digests,
    progressIntervalMs: options.progressIntervalMs ?? 10_000,
  });
  const socketPath = join(dir, "lre.sock");
  const server = await startServer({ cas, ac, digests, execEnabled: true, extraServices: [service], listen: { socketPath } });
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
