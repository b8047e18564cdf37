import { collectClosureViews } from "../../sandbox/mod";
import type { LocalExecutor } from "./local-executor";

export interface DiskCollectionOptions {
  /** Largest total size of the file cache (input blobs as read-only files). */
  readonly fileCacheBytes: number;
  /** Where closure views live (see closureViewsDir). */
  readonly viewsDir: string;
  /** Closure views kept, most recently used first. @default 32 */
  readonly keepViews?: number;
  /** Views used more recently than this are kept regardless. @default 60 s */
  readonly viewMinIdleMs?: number;
  /** @default 60 s */
  readonly intervalMs?: number;
  readonly onError?: (message: string, cause: unknown) => void;
}

export const DEFAULT_KEEP_VIEWS = 32;

/**
 * Keeps the executor's disk use outside the CAS bounded: the file cache is
 * pruned to its budget (least recently staged first) and closure views beyond
 * the most recent `keepViews` are removed, never an entry or view a running
 * action holds. Runs once at once, then every `intervalMs`; the returned
 * function stops it.
 */
export function startDiskCollection(executor: LocalExecutor, o: DiskCollectionOptions): { stop(): void; collectNow(): Promise<void> } {
  const report = o.onError ?? ((m, c) => console.error(`lre: ${m}`, c));
  let running: Promise<void> | undefined;
  const collectNow = (): Promise<void> => {
    running ??= (async () => {
      try {
        await executor.fileCache.prune(o.fileCacheBytes);
      } catch (err) {
        report("pruning the input file cache failed", err);
      }
      try {
        await collectClosureViews({
          viewsDir: o.viewsDir,
          keep: o.keepViews ?? DEFAULT_KEEP_VIEWS,
          inUse: executor.closureViewsInUse(),
          ...(o.viewMinIdleMs === undefined ? {} : { minIdleMs: o.viewMinIdleMs }),
        });
      } catch (err) {
        report("removing unused closure views failed", err);
      }
    })().finally(() => (running = undefined));
    return running;
  };
  void collectNow();
  const timer = setInterval(() => void collectNow(), o.intervalMs ?? 60_000);
  timer.unref?.();
  return { stop: () => clearInterval(timer), collectNow };
}
