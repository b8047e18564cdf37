import { defaultMaxCacheBytes } from "../config/defaults";
import { formatDuration } from "../config/duration";
import { formatSize } from "../config/size";
import { CliError, messageOf } from "./cli-error";
import { type ExecutorStatus, readExecutorStatus } from "./executor-status";
import type { Backend, Storage, StorageOptions, StorageStats } from "./contracts";
import { formatUpstreamStatus, readUpstreamStatus } from "../upstream/upstream-status";

/**
 * Opens the store of `dataDir` beside a running server or without one (LMDB
 * allows several processes on one environment).
 */
export async function withStorage<T>(backend: Backend, options: StorageOptions, use: (s: Storage) => Promise<T>): Promise<T> {
  let storage: Storage;
  try {
    storage = await backend.openStorage(options);
  } catch (err) {
    throw new CliError(`cannot open the store in data dir "${options.dataDir}": ${messageOf(err)}`);
  }
  try {
    return await use(storage);
  } finally {
    await storage.close();
  }
}

export interface StatsOptions {
  readonly dataDir: string;
  readonly json: boolean;
  /** --max-cache-size given to stats: the limit to report instead of the one lre serve recorded. */
  readonly maxBytes?: number;
}

/**
 * `lre stats`. The cache limit and protection window shown are the ones the
 * server enforces, which only the server knows: it records its
 * --max-cache-size and --protect-for in the data dir when it starts. This
 * process's own limit is a placeholder needed to open the store.
 */
export async function runStats(backend: Backend, o: StatsOptions, out: (text: string) => void): Promise<number> {
  const { dataDir } = o;
  const opened = await withStorage(backend, { dataDir, maxBytes: o.maxBytes ?? defaultMaxCacheBytes(dataDir) }, (s) => s.stats());
  const { servedMaxBytes, maxBytes: _placeholder, servedProtectMs, ...rest } = opened;
  // Opened without --protect-for, the store's window is the recorded one or the default: the one gc and import use too.
  const stats: ShownStats = { ...rest, maxBytes: o.maxBytes ?? servedMaxBytes, protectRecorded: servedProtectMs !== null };
  const executor = readExecutorStatus(dataDir);
  const upstream = readUpstreamStatus(dataDir);
  const upstreamLine = upstream === undefined ? "" : `upstream        ${formatUpstreamStatus(upstream)}\n`;
  out(o.json ? JSON.stringify({ dataDir, ...stats, executor: executor ?? null, upstream: upstream ?? null }) + "\n" : formatStats(dataDir, stats, executor) + upstreamLine);
  return 0;
}

/**
 * What `lre stats` shows: maxBytes is the limit in force, null when none is
 * known; protectMs the window in force, recorded by lre serve or the default.
 */
export type ShownStats = Omit<StorageStats, "maxBytes" | "servedMaxBytes" | "servedProtectMs"> & {
  maxBytes: number | null;
  protectRecorded: boolean;
};

function formatProtection(s: ShownStats): string {
  const source = s.protectRecorded ? "recorded by the last lre serve" : "the default; no lre serve has recorded one";
  const rule = s.protectMs === 0 ? "none, blobs are evicted by last use alone" : `blobs used within ${formatDuration(s.protectMs)} are never evicted`;
  return `${rule} (${source})`;
}

export function formatStats(dataDir: string, s: ShownStats, e?: ExecutorStatus): string {
  const lookups = s.acHits + s.acMisses;
  const hitRate = lookups === 0 ? "no lookups yet" : `${((100 * s.acHits) / lookups).toFixed(1)}% hit rate`;
  return [
    `data dir        ${dataDir}`,
    `cas             ${s.blobs} blobs, ${formatSize(s.bytes)} ${s.maxBytes === null ? "(no limit recorded)" : `of ${formatSize(s.maxBytes)}`}`,
    `protection      ${formatProtection(s)}`,
    `action cache    ${s.acEntries} entries (${s.acFromSandbox} run by lre, ${s.acFromClients} uploaded by clients)`,
    `lookups         ${s.acHits} hits, ${s.acMisses} misses (${hitRate})`,
    e === undefined
      ? `executor        no server running on this data dir`
      : `executor        ${e.running} of ${e.jobs} jobs running, ${e.queued} queued, ${e.done} done, ${e.deduplicated} deduplicated (pid ${e.pid})`,
  ].join("\n") + "\n";
}
