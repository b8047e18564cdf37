import type { ActionCache } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import { type Digest, type DigestFn, digestKey, formatDigest } from "../digest/digest";
import { GrpcCode, RpcError, isRpcError } from "../errors";
import { referencedBlobs } from "../ac/referenced-blobs";
import type { BlobUpload, UpstreamClient } from "./upstream-client";
import { type UpstreamHealth, isTransportFailure } from "./upstream-health";
import { type UpstreamLog, messageOf, silentLog } from "./upstream-log";
import type { QueuedUpload, WriteBehindQueue } from "./write-behind-queue";

export interface UploaderOptions {
  /** Upstream instance for blobs (lre's CAS has no instances); action results use this too when set, else their own. */
  readonly instance?: string;
  readonly log?: UpstreamLog;
  /** Entries taken from the queue per round. @default 500 */
  readonly batchEntries?: number;
  /** Blobs up to this size go in BatchUpdateBlobs. @default 1 MiB */
  readonly batchBlobMaxBytes?: number;
  /** Bytes per BatchUpdateBlobs call. @default 3 MB */
  readonly batchMaxBytes?: number;
  /** First retry delay after a failed round; doubles up to maxBackoffMs. @default 500 */
  readonly minBackoffMs?: number;
  /** @default 30000 */
  readonly maxBackoffMs?: number;
}

/** Counters for `lre stats`. */
export interface UploaderStats {
  uploadedBlobs: number;
  uploadedResults: number;
  /** Entries dropped because they can never be uploaded (evicted locally before upload, rejected by the upstream). */
  dropped: number;
}

/**
 * Drains the write-behind queue into the upstream in the background. Each
 * round asks FindMissingBlobs first and uploads only what the upstream lacks
 * (BatchUpdateBlobs for small blobs, ByteStream Write streamed from the local
 * store for large ones). An action result is uploaded only after every blob
 * it references is in the upstream, so the upstream never holds a result it
 * cannot serve. A round that fails on the way to the upstream leaves the
 * queue untouched and is retried with exponential backoff; entries that can
 * never succeed (the blob was evicted here first, the upstream rejects the
 * bytes) are dropped with a warning instead of blocking the queue.
 */
export class UpstreamUploader {
  readonly stats: UploaderStats = { uploadedBlobs: 0, uploadedResults: 0, dropped: 0 };
  private readonly log: UpstreamLog;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private readonly o: Required<Omit<UploaderOptions, "instance" | "log">>;

  constructor(
    private readonly queue: WriteBehindQueue,
    private readonly localCas: BlobStore,
    private readonly localAc: ActionCache,
    private readonly upstream: UpstreamClient,
    private readonly health: UpstreamHealth,
    private readonly options: UploaderOptions = {},
  ) {
    this.log = options.log ?? silentLog;
    this.o = {
      batchEntries: options.batchEntries ?? 500,
      batchBlobMaxBytes: options.batchBlobMaxBytes ?? 1024 * 1024,
      batchMaxBytes: options.batchMaxBytes ?? 3_000_000,
      minBackoffMs: options.minBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
    };
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.wake();
    await this.loop;
  }

  /** One pass over what is queued now; true when it all went through. Exposed for tests. */
  async round(): Promise<boolean> {
    const { blobs, actions } = this.queue.peek(this.o.batchEntries);
    if (blobs.length === 0 && actions.length === 0) return true;
    const done = await this.uploadBlobs(blobs.map((e) => e.digest), this.options.instance ?? "");
    await this.queue.remove(blobs.filter((e) => done.has(digestKey(e.digest))));
    const failed = blobs.filter((e) => !done.has(digestKey(e.digest)));
    for (const e of actions) {
      if (this.stopped) break;
      await this.uploadAction(e);
    }
    return failed.length === 0;
  }

  private async run(): Promise<void> {
    let backoff = this.o.minBackoffMs;
    while (!this.stopped) {
      if (this.queue.length() === 0) {
        await this.queue.waitForWork(1000);
        continue;
      }
      try {
        const before = this.queue.length();
        await this.round();
        this.health.succeeded();
        // Never spin: if a round changed nothing, wait for new work before the next.
        if (this.queue.length() >= before) await this.queue.waitForWork(backoff);
        backoff = this.o.minBackoffMs;
      } catch (err) {
        this.health.failed(err);
        this.log.debug(`write-behind: upload round failed, retrying in ${backoff} ms: ${messageOf(err)}`);
        await sleep(backoff, () => this.stopped);
        backoff = Math.min(backoff * 2, this.o.maxBackoffMs);
      }
    }
  }

  /**
   * Makes sure the upstream has `digests`; returns the keys it now has
   * (already there, uploaded, or dropped as hopeless). Throws on transport
   * failures so the round is retried later.
   */
  async uploadBlobs(digests: readonly Digest[], instance: string): Promise<Set<string>> {
    const settled = new Set(digests.map(digestKey));
    if (digests.length === 0) return settled;
    const missing = await this.upstream.findMissing(instance, digests, this.upstream.timeouts.uploadMs);
    const small = missing.filter((d) => d.sizeBytes <= this.o.batchBlobMaxBytes);
    const large = missing.filter((d) => d.sizeBytes > this.o.batchBlobMaxBytes);
    const settle = (d: Digest, ok: boolean) => {
      if (ok) this.stats.uploadedBlobs++;
      else settled.delete(digestKey(d));
    };

    let batch: BlobUpload[] = [];
    let bytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const sent = batch;
      batch = [];
      bytes = 0;
      for (const [fn, group] of groupByFn(sent)) {
        const statuses = await this.upstream.batchUpdate(instance, fn, group);
        for (const b of group) {
          const st = statuses.get(digestKey(b.digest));
          if (st === undefined || st.code === GrpcCode.OK) settle(b.digest, st !== undefined);
          else if (isTransportFailure(st.code)) throw new RpcError(st.code, `upstream ${this.upstream.url} BatchUpdateBlobs: ${st.message}`);
          else this.drop(`blob ${formatDigest(b.digest)}`, `the upstream refused it: ${st.message}`);
        }
      }
    };
    for (const d of small) {
      let data: Uint8Array;
      try {
        data = await this.localCas.get(d);
      } catch (err) {
        if (!isRpcError(err, GrpcCode.NOT_FOUND)) throw err;
        this.drop(`blob ${formatDigest(d)}`, "it is no longer in the local store");
        continue;
      }
      if (bytes + data.byteLength > this.o.batchMaxBytes) await flush();
      batch.push({ digest: d, data });
      bytes += data.byteLength;
    }
    await flush();
    for (const d of large) {
      let chunks: AsyncIterable<Uint8Array>;
      try {
        chunks = await this.localCas.read(d);
      } catch (err) {
        if (!isRpcError(err, GrpcCode.NOT_FOUND)) throw err;
        this.drop(`blob ${formatDigest(d)}`, "it is no longer in the local store");
        continue;
      }
      try {
        await this.upstream.write(instance, d, chunks);
        settle(d, true);
      } catch (err) {
        if (isRpcError(err) && !isTransportFailure(err.code)) this.drop(`blob ${formatDigest(d)}`, messageOf(err));
        else throw err;
      }
    }
    return settled;
  }

  private async uploadAction(e: QueuedUpload): Promise<void> {
    if (e.kind !== "action") return;
    const what = `action result ${formatDigest(e.digest)} (instance "${e.instance}")`;
    const entry = await this.localAc.get(e.instance, e.digest);
    if (entry === undefined) {
      this.drop(what, "it is no longer complete in the local cache");
      await this.queue.remove([e]);
      return;
    }
    const upInstance = this.options.instance ?? e.instance;
    let blobs: Digest[];
    let trees: Digest[];
    try {
      ({ blobs, trees } = await referencedBlobs(entry.result, e.digest.fn, (t) => this.localCas.get(t)));
    } catch (err) {
      this.drop(what, messageOf(err));
      await this.queue.remove([e]);
      return;
    }
    const needed = [...trees, ...blobs];
    const settled = await this.uploadBlobs(needed, upInstance);
    if (needed.some((d) => !settled.has(digestKey(d)))) {
      this.drop(what, "some of its blobs could not be uploaded");
      await this.queue.remove([e]);
      return;
    }
    try {
      await this.upstream.updateActionResult(upInstance, e.digest, entry.result);
      this.stats.uploadedResults++;
    } catch (err) {
      if (!isRpcError(err) || isTransportFailure(err.code)) throw err;
      this.drop(what, messageOf(err));
    }
    await this.queue.remove([e]);
  }

  private drop(what: string, why: string): void {
    this.stats.dropped++;
    this.log.warn(`write-behind: not uploading ${what}: ${why}`);
  }
}

function groupByFn(blobs: readonly BlobUpload[]): Map<DigestFn, BlobUpload[]> {
  const out = new Map<DigestFn, BlobUpload[]>();
  for (const b of blobs) {
    const g = out.get(b.digest.fn);
    if (g === undefined) out.set(b.digest.fn, [b]);
    else g.push(b);
  }
  return out;
}

/** Sleeps up to `ms`, waking early once `stop()` says so (checked every 100 ms). */
async function sleep(ms: number, stop: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!stop() && Date.now() < until) await new Promise((r) => setTimeout(r, Math.min(100, until - Date.now())));
}
