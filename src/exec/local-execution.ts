import { join } from "node:path";
import { ClosureResolver } from "../../sandbox/mod";
import { LocalExecutor, removeTree } from "./local-executor";
import type { ExecutionOutcome, LocalExecutorOptions } from "./local-executor";
import { type ClosureViewOptions, sandboxRuntime } from "./sandbox-runtime";
import { Scheduler } from "./scheduler";

export interface LocalExecutionOptions extends Omit<LocalExecutorOptions, "closures" | "sandbox"> {
  /** Actions running at once. */
  readonly jobs: number;
  /** Nix's db.sqlite; the resolver's default when unset. */
  readonly nixDbPath?: string;
  readonly closureViewOptions: ClosureViewOptions;
  /** How long finished operations stay visible to WaitExecution. @default 10 minutes */
  readonly retainOperationsMs?: number;
}

/**
 * Wiring for `lre serve`: the executor on the real sandbox and Nix store, and
 * the scheduler in front of it. Pass both to createExecutionService. Exec
 * dirs left by a previous process (killed mid-action) are removed first, so
 * the caller must own `dataDir` exclusively.
 */
export async function createLocalExecution(
  o: LocalExecutionOptions,
): Promise<{ executor: LocalExecutor; scheduler: Scheduler<ExecutionOutcome> }> {
  await removeTree(join(o.dataDir, "exec"));
  const { jobs, nixDbPath, closureViewOptions, retainOperationsMs, ...rest } = o;
  const executor = new LocalExecutor({
    ...rest,
    closures: nixDbPath === undefined ? new ClosureResolver() : new ClosureResolver(nixDbPath),
    sandbox: sandboxRuntime(closureViewOptions),
  });
  // Temp files of writes cut short by a crash: nothing else ever removes them.
  await executor.fileCache.removeStaleTemps();
  const scheduler = new Scheduler<ExecutionOutcome>({
    jobs,
    ...(retainOperationsMs === undefined ? {} : { retainMs: retainOperationsMs }),
    ...(o.clock === undefined ? {} : { clock: o.clock }),
  });
  return { executor, scheduler };
}
