import type { Database } from "lmdb";
import { type Digest, type DigestFn, digestKey, makeDigest } from "../digest/digest";
import { type LmdbEnv, acquireEnv } from "../storage/lmdb-env";

/** One pending upload: a blob, or an action result (whose blobs go first). */
export type QueuedUpload =
  | { readonly kind: "blob"; readonly key: string; readonly digest: Digest; readonly seq: number }
  | { readonly kind: "action"; readonly key: string; readonly instance: string; readonly digest: Digest; readonly seq: number };

interface QueueValue {
  /** Enqueue sequence; a later enqueue of the same key replaces it, so a removal only takes the version uploaded. */
  s: number;
}

// Plain printable keys: lmdb-js's key encoding treats NUL specially, which breaks range scans.
const BLOB = "b:";
const ACTION = "a:";

/**
 * The write-behind queue, a table in the data dir's LMDB env, so what was
 * accepted locally but not yet uploaded survives a crash or restart. Keys
 * name the blob or the (instance, action) pair, so enqueueing something
 * already pending costs one overwrite and no duplicate upload. Enqueueing
 * resolves once the entry is committed: the client's acknowledgement comes
 * after that, so a kill -9 right after it cannot lose the upload.
 */
export class WriteBehindQueue {
  private seq = Date.now() * 1000;
  private listeners: (() => void)[] = [];

  private constructor(
    private readonly env: LmdbEnv,
    private readonly db: Database<QueueValue, string>,
  ) {}

  static async open(dataDir: string): Promise<WriteBehindQueue> {
    const env = await acquireEnv(dataDir);
    const db = env.root.openDB<QueueValue, string>({ name: "upstream-queue", encoding: "msgpack" });
    return new WriteBehindQueue(env, db);
  }

  async enqueueBlob(digest: Digest): Promise<void> {
    await this.db.put(`${BLOB}${digestKey(digest)}`, { s: ++this.seq });
    this.notify();
  }

  async enqueueAction(instance: string, action: Digest): Promise<void> {
    await this.db.put(`${ACTION}${digestKey(action)}:${instance}`, { s: ++this.seq });
    this.notify();
  }

  /** Up to `limit` pending blobs, then up to `limit` pending action results. */
  peek(limit: number): { blobs: QueuedUpload[]; actions: QueuedUpload[] } {
    const blobs: QueuedUpload[] = [];
    const actions: QueuedUpload[] = [];
    for (const { key, value } of this.db.getRange({ start: BLOB, end: "b;", limit })) {
      const digest = parseKey(key.slice(BLOB.length));
      if (digest === undefined) void this.db.remove(key);
      else blobs.push({ kind: "blob", key, digest, seq: value.s });
    }
    for (const { key, value } of this.db.getRange({ start: ACTION, end: "a;", limit })) {
      // `fn:hash:size:instance`; the instance may itself contain colons.
      const parts = key.slice(ACTION.length).split(":");
      const digest = parts.length < 4 ? undefined : parseKey(parts.slice(0, 3).join(":"));
      if (digest === undefined) void this.db.remove(key);
      else actions.push({ kind: "action", key, instance: parts.slice(3).join(":"), digest, seq: value.s });
    }
    return { blobs, actions };
  }

  /** Drops entries that were uploaded, unless they were enqueued again meanwhile. */
  async remove(entries: readonly QueuedUpload[]): Promise<void> {
    const writes: Promise<unknown>[] = [];
    for (const e of entries) {
      if (this.db.get(e.key)?.s === e.seq) writes.push(this.db.remove(e.key));
    }
    await Promise.all(writes);
  }

  length(): number {
    return this.db.getCount();
  }

  /** Resolves at the next enqueue, or after `ms`. */
  waitForWork(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.listeners = self.listeners.filter((l) => l !== done);
        resolve();
      }
      this.listeners.push(done);
    });
  }

  /** Ends every waitForWork now. */
  wake(): void {
    this.notify();
  }

  async close(): Promise<void> {
    this.notify();
    await this.env.release();
  }

  private notify(): void {
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l();
  }
}

function parseKey(key: string): Digest | undefined {
  const [fn, hash, size] = key.split(":");
  if (fn !== "sha256" && fn !== "blake3") return undefined;
  try {
    return makeDigest(fn satisfies DigestFn, hash ?? "", Number(size));
  } catch {
    return undefined;
  }
}
