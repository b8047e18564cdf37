import type { ActionCache } from "../ac/action-cache";
import { CompletenessCheckingActionCache } from "../ac/completeness-checking-action-cache";
import { LmdbActionCache } from "../ac/lmdb-action-cache";
import type { BlobStore } from "../cas/blob-store";
import { EmptyBlobStore } from "../cas/empty-blob-store";
import { LmdbBlobStore } from "../cas/lmdb-blob-store";
import { DEFAULT_PROTECT_MS, SizeBoundedBlobStore } from "../cas/size-bounded-blob-store";
import { VerifyingBlobStore } from "../cas/verifying-blob-store";
import type { Clock } from "../clock";
import { systemClock } from "../clock";
import { acquireEnv } from "./lmdb-env";
import type { LmdbEnv } from "./lmdb-env";

export interface StorageOptions {
  dataDir: string;
  /**
   * The size limit; "as served" takes the one the last serving process
   * recorded (so `lre import` beside a server respects the server's limit),
   * else `defaultMaxBytes`.
   */
  maxBytes: number | "as served";
  /** With maxBytes "as served" and nothing recorded. */
  defaultMaxBytes?: number;
  /**
   * Blobs used within this window are never evicted. Default: the window the
   * last serving process recorded, else DEFAULT_PROTECT_MS, so `lre gc` and
   * `lre import` beside (or after) a server never evict what it promised to keep
   * nor keep what it was told it may evict.
   */
  protectMs?: number;
  clock?: Clock;
  inlineMaxBytes?: number;
  /**
   * This process is `lre serve`: its maxBytes and protection window are
   * recorded in the data dir so `lre stats`, another process opening the store
   * with a limit of its own, reports what the server enforces, and other
   * processes default to the server's window.
   */
  serving?: boolean;
}

export interface StorageStats {
  blobs: number;
  bytes: number;
  /** The limit this process opened the store with. */
  maxBytes: number;
  /** The limit of the last `lre serve` on this data dir, or null if none has recorded one. */
  servedMaxBytes: number | null;
  /** The protection window this process evicts with (see StorageOptions.protectMs). */
  protectMs: number;
  /** The window of the last `lre serve` on this data dir, or null if none has recorded one. */
  servedProtectMs: number | null;
  acEntries: number;
  acFromSandbox: number;
  acFromClients: number;
  acHits: number;
  acMisses: number;
}

export interface Storage {
  /** The full CAS stack: verifying -> empty blob -> size-bounded -> LMDB. */
  cas: BlobStore;
  /** Completeness-checking over the LMDB action cache. */
  ac: ActionCache;
  stats(): Promise<StorageStats>;
  /** Evicts least recently used, unprotected blobs until at most targetBytes remain. */
  gc(targetBytes: number): Promise<{ evictedBlobs: number; evictedBytes: number; bytesAfter: number }>;
  /** Counts a GetActionResult outcome; written to LMDB periodically so `lre stats` in another process sees it. */
  recordAcLookup(hit: boolean): void;
  close(): Promise<void>;
}

const HITS = "ac-hits";
const MISSES = "ac-misses";
const SERVED_MAX_BYTES = "served-max-bytes";
const SERVED_PROTECT_MS = "served-protect-ms";
const COUNTER_FLUSH_MS = 1000;

/**
 * Opens the data directory the server and the CLI share. LMDB allows several
 * processes on one env, so `lre stats` and `lre gc` may open it while a server
 * runs: use recency and AC counters are kept in LMDB (flushed about every
 * second), not only in the server's memory.
 */
export async function openStorage(o: StorageOptions): Promise<Storage> {
  const clock = o.clock ?? systemClock;
  const env = await acquireEnv(o.dataDir);
  const opened: { close(): Promise<void> }[] = [];
  try {
    const lmdb = await LmdbBlobStore.open({
      dataDir: o.dataDir,
      clock,
      ...(o.inlineMaxBytes === undefined ? {} : { inlineMaxBytes: o.inlineMaxBytes }),
    });
    opened.push(lmdb);
    // A server given no window uses the default, not its predecessor's: only an explicit choice is carried forward.
    const protectMs = o.protectMs ?? (o.serving === true ? undefined : env.meta.get(SERVED_PROTECT_MS)) ?? DEFAULT_PROTECT_MS;
    const maxBytes = o.maxBytes !== "as served" ? o.maxBytes : (env.meta.get(SERVED_MAX_BYTES) ?? o.defaultMaxBytes);
    if (maxBytes === undefined) throw new TypeError('openStorage: maxBytes "as served" needs defaultMaxBytes');
    const bounded = new SizeBoundedBlobStore(lmdb, { maxBytes, clock, protectMs });
    await bounded.usage();
    const cas = new VerifyingBlobStore(new EmptyBlobStore(bounded));
    if (o.serving === true) {
      await env.meta.put(SERVED_MAX_BYTES, maxBytes);
      await env.meta.put(SERVED_PROTECT_MS, protectMs);
    }
    const acBase = await LmdbActionCache.open({ dataDir: o.dataDir });
    const ac = new CompletenessCheckingActionCache(acBase, cas);
    return new OpenStorage(env, lmdb, bounded, protectMs, cas, acBase, ac);
  } catch (err) {
    for (const s of opened) await s.close().catch(() => undefined);
    await env.release();
    throw err;
  }
}

class OpenStorage implements Storage {
  private pendingHits = 0;
  private pendingMisses = 0;
  private readonly timer: ReturnType<typeof setInterval>;
  private closed = false;

  constructor(
    private readonly env: LmdbEnv,
    private readonly lmdb: LmdbBlobStore,
    private readonly bounded: SizeBoundedBlobStore,
    private readonly protectMs: number,
    readonly cas: BlobStore,
    private readonly acBase: LmdbActionCache,
    readonly ac: ActionCache,
  ) {
    this.timer = setInterval(() => void this.flushCounters().catch(() => undefined), COUNTER_FLUSH_MS);
    this.timer.unref?.();
  }

  recordAcLookup(hit: boolean): void {
    if (hit) this.pendingHits++;
    else this.pendingMisses++;
  }

  async stats(): Promise<StorageStats> {
    await this.flushCounters();
    // Counted afresh from the shared index, so a process that did not make the changes (the CLI next to a server) sees them.
    let blobs = 0;
    let bytes = 0;
    for await (const b of this.lmdb.list()) {
      blobs++;
      bytes += b.digest.sizeBytes;
    }
    const { sandbox, client } = this.acBase.countByOrigin();
    return {
      blobs,
      bytes,
      maxBytes: this.bounded.maxBytes,
      servedMaxBytes: this.env.meta.get(SERVED_MAX_BYTES) ?? null,
      protectMs: this.protectMs,
      servedProtectMs: this.env.meta.get(SERVED_PROTECT_MS) ?? null,
      acEntries: sandbox + client,
      acFromSandbox: sandbox,
      acFromClients: client,
      acHits: this.env.meta.get(HITS) ?? 0,
      acMisses: this.env.meta.get(MISSES) ?? 0,
    };
  }

  async gc(targetBytes: number): Promise<{ evictedBlobs: number; evictedBytes: number; bytesAfter: number }> {
    // Recency recorded in this process must be in LMDB before victims are chosen from it.
    await this.lmdb.flushUses();
    return this.bounded.evictTo(Math.max(0, targetBytes));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.flushCounters();
    await this.ac.close();
    await this.cas.close();
    await this.env.release();
  }

  /**
   * Adds this process's counts to the shared ones. Read-modify-write is safe
   * because only the serving process records lookups.
   */
  private async flushCounters(): Promise<void> {
    if (this.pendingHits === 0 && this.pendingMisses === 0) return;
    const hits = this.pendingHits;
    const misses = this.pendingMisses;
    this.pendingHits = 0;
    this.pendingMisses = 0;
    void this.env.meta.put(HITS, (this.env.meta.get(HITS) ?? 0) + hits);
    void this.env.meta.put(MISSES, (this.env.meta.get(MISSES) ?? 0) + misses);
    await this.env.root.committed;
  }
}
