import { statSync } from "node:fs";
import { join } from "node:path";
import { ClosureResolver, DEFAULT_STORE_DIR, DEFAULT_VIEWS_DIR, UnknownStorePathError, removeIdleCgroups } from "../../sandbox/mod";
import type { ServeConfig } from "../config/config";
import type { ActionCache } from "../ac/action-cache";
import { ClosureCheckingActionCache } from "../ac/closure-checking-action-cache";
import { startDiskCollection } from "../exec/disk-collector";
import { createLocalExecution } from "../exec/local-execution";
import { createExecutionService } from "../grpc/execution-service";
import type { ServiceEntry } from "../grpc/service-entry";
import type { Storage } from "../storage/open-storage";
import { CliError, messageOf } from "./cli-error";
import { publishExecutorStatus } from "./executor-status";
import type { Logger } from "./logger";

/**
 * Builds the Execution service for `lre serve`: the local executor on the
 * real sandbox and Nix database, the scheduler with `--jobs` slots, and the
 * thin gRPC adapter over both.
 */
export interface RunningExecution {
  readonly service: ServiceEntry;
  /**
   * The action cache for the other services: results built with a server
   * default closure other than the current one read as misses.
   */
  readonly ac: ActionCache;
  /** Stops publishing executor status; running actions belong to the scheduler and finish on their own. */
  close(): void;
}

/** The input file cache may use this share of --max-cache-size on top of it. */
export const FILE_CACHE_SHARE = 0.1;

export async function startExecution(cfg: ServeConfig, storage: Storage, log: Logger): Promise<RunningExecution> {
  checkDefaultClosure(cfg.exec.closures);
  const viewsDir = closureViewsDir(cfg.dataDir);
  const { executor, scheduler } = await createLocalExecution({
    cas: storage.cas,
    dataDir: cfg.dataDir,
    jobs: cfg.exec.jobs,
    defaultClosureRoots: cfg.exec.closures,
    defaultTimeoutMs: cfg.exec.defaultTimeoutMs,
    maxTimeoutMs: cfg.exec.maxTimeoutMs,
    closureViewOptions: { viewsDir },
  });
  const collection = startDiskCollection(executor, {
    fileCacheBytes: Math.max(64 * 1024 * 1024, Math.floor(cfg.maxCacheBytes * FILE_CACHE_SHARE)),
    viewsDir,
    onError: (message, cause) => log.warn(`${message}: ${cause instanceof Error ? cause.message : String(cause)}`),
  });
  const service = createExecutionService({
    cas: storage.cas,
    ac: storage.ac,
    executor,
    scheduler,
    digests: { defaultDigestFn: cfg.digestFunction, instanceDigestFn: { ...cfg.instanceDigestFunctions } },
    onAcLookup: (hit) => storage.recordAcLookup(hit),
    onError: (message, cause) => log.warn(`${message}: ${cause instanceof Error ? cause.message : String(cause)}`),
  });
  const status = publishExecutorStatus(cfg.dataDir, cfg.exec.jobs, () => scheduler.stats());
  const ac = new ClosureCheckingActionCache(storage.ac, () => executor.currentDefaultClosureHash());
  return {
    service,
    ac,
    close: () => {
      status.stop();
      collection.stop();
      removeIdleCgroups();
    },
  };
}

/**
 * Every `--closure` path must be in the Nix store when lre starts: otherwise
 * each action relying on the default would fail with the same error, long
 * after the flag was mistyped. (Its shape was checked with the other flags.)
 */
export function checkDefaultClosure(paths: readonly string[], resolver: ClosureResolver = new ClosureResolver()): void {
  if (paths.length === 0) return;
  try {
    resolver.resolve(paths);
  } catch (err) {
    if (err instanceof UnknownStorePathError) {
      const given = err.root === err.path ? `"${err.path}"` : `"${err.root}" (store path "${err.path}")`;
      throw new CliError(
        `--closure ${given} is not valid in this machine's Nix store; build or fetch it first (e.g. \`nix-store --realise ${err.path}\`), or leave it out`,
      );
    }
    throw new CliError(`--closure cannot be checked against the Nix store: ${messageOf(err)}`);
  } finally {
    resolver.close();
  }
}

/**
 * Closure views are hardlink farms of store files, so they must live on the
 * filesystem of /nix/store. The data dir is preferred when it is there (it is
 * the user's own and needs no privileges); otherwise Nix's state dir.
 */
export function closureViewsDir(dataDir: string): string {
  try {
    if (statSync(dataDir).dev === statSync(DEFAULT_STORE_DIR).dev) return join(dataDir, "closure-views");
  } catch {
    // No /nix/store yet: the view builder reports that with a clear error when an action needs it.
  }
  return DEFAULT_VIEWS_DIR;
}
