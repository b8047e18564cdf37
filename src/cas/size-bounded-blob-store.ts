import type { Clock } from "../clock";
import { systemClock } from "../clock";
import { formatDuration } from "../config/duration";
import type { Digest } from "../digest/digest";
import { digestKey, formatDigest } from "../digest/digest";
import { RpcError } from "../errors";
import type { BlobStore, BlobWriter } from "./blob-store";
import { checkSize, writeFinished } from "./checks";
import { KeyedMutex } from "./keyed-mutex";
import { ForwardingBlobStore } from "./forwarding-blob-store";

/** Bazel and Buck2 assume a blob survives 3 h after they last saw it (reliability-targets §4). */
export const DEFAULT_PROTECT_MS = 3 * 60 * 60 * 1000;

export interface SizeBoundedBlobStoreOptions {
  maxBytes: number;
  /** A blob used within this window is never evicted. */
  protectMs?: number;
  clock?: Clock;
  /**
   * Fraction of maxBytes freed beyond what a write needs. Finding victims scans
   * the base's index, so evicting a little extra spares a scan per write once
   * the store is full. 0 evicts exactly what is needed.
   */
  evictionSlack?: number;
}

export interface EvictionResult {
  evictedBlobs: number;
  evictedBytes: number;
  bytesAfter: number;
}

/**
 * Keeps the bytes below it under `maxBytes` at all times by reserving space
 * before a write starts and evicting least recently used blobs to make room
 * (reliability-targets E-1). Use is whatever the base records: reads,
 * FindMissing hits and touch() (action-cache hits, input staging). A blob used
 * within `protectMs` is never evicted (E-2); if only such blobs remain, the
 * write fails RESOURCE_EXHAUSTED rather than break a build that relies on them.
 *
 * Recency lives in the base (persisted by LmdbBlobStore), not here: this layer
 * keeps only two totals in memory and finds victims by scanning base.list(),
 * so a million blobs cost a few MiB during a scan and nothing between scans.
 */
export class SizeBoundedBlobStore extends ForwardingBlobStore {
  override readonly name: string;
  readonly maxBytes: number;
  private readonly protectMs: number;
  private readonly clock: Clock;
  private readonly slackBytes: number;
  private readonly keys = new KeyedMutex();
  /** Serialises reservations and evictions so two writers never both count the same free space. */
  private evicting: Promise<unknown> = Promise.resolve();
  private storedBytes = 0;
  private storedBlobs = 0;
  private reservedBytes = 0;
  /** Bumped on every change to the totals, so a scan knows whether its sum is still current. */
  private generation = 0;
  private readonly ready: Promise<void>;

  constructor(
    base: BlobStore,
    options: SizeBoundedBlobStoreOptions,
  ) {
    super(base);
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= 0) {
      throw RpcError.invalidArgument(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    }
    this.name = `size-bounded(${base.name})`;
    this.maxBytes = options.maxBytes;
    this.protectMs = options.protectMs ?? DEFAULT_PROTECT_MS;
    this.clock = options.clock ?? systemClock;
    this.slackBytes = Math.floor(this.maxBytes * (options.evictionSlack ?? 0.02));
    this.ready = this.recount();
    this.ready.catch(() => undefined);
  }

  /** Blobs and bytes currently stored (not counting uploads in flight). */
  async usage(): Promise<{ blobs: number; bytes: number }> {
    await this.ready;
    return { blobs: this.storedBlobs, bytes: this.storedBytes };
  }

  override async put(digest: Digest, data: Uint8Array): Promise<void> {
    // A blob already stored takes no more room, so re-uploading it must not
    // fail RESOURCE_EXHAUSTED when the store is full of protected blobs.
    const stored = await this.ifStored(digest, async () => {
      checkSize(digest, data.byteLength);
    });
    if (stored) return;
    await this.reserve(digest);
    try {
      await this.publish(digest, () => this.base.put(digest, data));
    } finally {
      this.release(digest.sizeBytes);
    }
  }

  override async beginWrite(digest: Digest): Promise<BlobWriter> {
    await this.ready;
    if (digest.sizeBytes > 0 && (await this.base.findMissing([digest])).length === 0) {
      // Unreserved: the blob needs no room unless it is evicted before commit,
      // and then commit reserves (commitUnreserved).
      const inner = await this.base.beginWrite(digest);
      return new ReservedWriter(inner, () => this.commitUnreserved(digest, inner), () => undefined);
    }
    await this.reserve(digest);
    let inner: BlobWriter;
    try {
      inner = await this.base.beginWrite(digest);
    } catch (err) {
      this.release(digest.sizeBytes);
      throw err;
    }
    return new ReservedWriter(
      inner,
      () => this.publish(digest, () => inner.commit()),
      () => this.release(digest.sizeBytes),
    );
  }

  override async delete(digests: readonly Digest[]): Promise<void> {
    await this.ready;
    await Promise.all(digests.map((d) => this.remove(d)));
  }

  /**
   * Evicts least recently used, unprotected blobs until at most `targetBytes`
   * are stored (`lre gc`). Protected blobs stay even if the target is missed.
   */
  async evictTo(targetBytes: number): Promise<EvictionResult> {
    await this.ready;
    return this.serially(async () => {
      const over = this.storedBytes + this.reservedBytes - targetBytes;
      const { blobs, bytes } = over > 0 ? await this.evict(over) : { blobs: 0, bytes: 0 };
      return { evictedBlobs: blobs, evictedBytes: bytes, bytesAfter: this.storedBytes };
    });
  }

  private async reserve(digest: Digest): Promise<void> {
    await this.ready;
    const size = digest.sizeBytes;
    if (size > this.maxBytes) {
      throw RpcError.resourceExhausted(
        `blob ${formatDigest(digest)} (${size} bytes) is larger than the whole CAS (maxBytes ${this.maxBytes}); raise maxBytes`,
      );
    }
    if (size === 0) return;
    await this.serially(async () => {
      const over = this.storedBytes + this.reservedBytes + size - this.maxBytes;
      if (over > 0) {
        await this.evict(over + this.slackBytes);
        if (this.storedBytes + this.reservedBytes + size > this.maxBytes) {
          throw RpcError.resourceExhausted(
            `the CAS is full (${this.storedBytes} bytes stored, ${this.reservedBytes} being uploaded, maxBytes ${this.maxBytes}) ` +
              `and every remaining blob was used within the last ${formatDuration(this.protectMs)}; ` +
              `retry later, raise maxBytes (lre serve --max-cache-size) or shorten the protection window (--protect-for)`,
          );
        }
      }
      this.reservedBytes += size;
    });
  }

  private release(size: number): void {
    if (size > 0) this.reservedBytes -= size;
  }

  /**
   * Runs `done` under the digest's lock if the blob is stored, so eviction
   * cannot remove it meanwhile; true if it was. The presence check is a
   * FindMissing hit, which records a use: a re-upload keeps the blob alive as
   * long as any other use would.
   */
  private async ifStored(digest: Digest, done: () => Promise<void>): Promise<boolean> {
    await this.ready;
    return this.keys.run(digestKey(digest), async () => {
      if ((await this.base.findMissing([digest])).length > 0) return false;
      await done();
      return true;
    });
  }

  /**
   * Commit of an upload that began while its blob was stored. If it still is,
   * the duplicate bytes are dropped (the stored ones are the same blob);
   * if it has been evicted since, it needs room like any new blob.
   */
  private async commitUnreserved(digest: Digest, inner: BlobWriter): Promise<void> {
    const stored = await this.ifStored(digest, async () => {
      const written = inner.bytesWritten;
      await inner.abort();
      checkSize(digest, written);
    });
    if (stored) return;
    try {
      await this.reserve(digest);
    } catch (err) {
      await inner.abort();
      throw err;
    }
    try {
      await this.publish(digest, () => inner.commit());
    } finally {
      this.release(digest.sizeBytes);
    }
  }

  /** Runs the base write under the digest's lock and counts the blob if it is new. */
  private async publish(digest: Digest, write: () => Promise<void>): Promise<void> {
    await this.keys.run(digestKey(digest), async () => {
      const isNew = (await this.base.findMissing([digest])).length > 0;
      await write();
      if (isNew) this.account(1, digest.sizeBytes);
    });
  }

  private async remove(d: Digest): Promise<boolean> {
    return this.keys.run(digestKey(d), async () => {
      if ((await this.base.findMissing([d])).length > 0) return false;
      await this.base.delete([d]);
      this.account(-1, -d.sizeBytes);
      return true;
    });
  }

  private account(blobs: number, bytes: number): void {
    this.storedBlobs += blobs;
    this.storedBytes += bytes;
    this.generation++;
  }

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.evicting.then(fn, fn);
    this.evicting = run.catch(() => undefined);
    return run;
  }

  private async recount(): Promise<void> {
    let blobs = 0;
    let bytes = 0;
    for await (const b of this.base.list()) {
      blobs++;
      bytes += b.digest.sizeBytes;
    }
    this.storedBlobs = blobs;
    this.storedBytes = bytes;
  }

  /**
   * Frees at least `needBytes` if enough unprotected blobs exist. Two passes
   * over base.list(): the first keeps only (lastUsed, size) pairs in flat
   * arrays to find the age cutoff, the second deletes blobs older than it.
   */
  private async evict(needBytes: number): Promise<{ blobs: number; bytes: number }> {
    const protectFrom = this.clock.nowMs() - this.protectMs;
    const generation = this.generation;
    let times = new Float64Array(1024);
    let sizes = new Float64Array(1024);
    let n = 0;
    let total = 0;
    let count = 0;
    for await (const b of this.base.list()) {
      total += b.digest.sizeBytes;
      count++;
      if (b.lastUsedMs > protectFrom || b.digest.sizeBytes === 0) continue;
      if (n === times.length) {
        times = grow(times);
        sizes = grow(sizes);
      }
      times[n] = b.lastUsedMs;
      sizes[n] = b.digest.sizeBytes;
      n++;
    }
    // Another process (`lre gc`) may have deleted blobs; when nothing changed
    // here during the scan its sum is the truth.
    if (generation === this.generation) {
      this.storedBytes = total;
      this.storedBlobs = count;
    }
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => (times[a] ?? 0) - (times[b] ?? 0));
    let cutoff = -Infinity;
    let planned = 0;
    for (const i of order) {
      if (planned >= needBytes) break;
      planned += sizes[i] ?? 0;
      cutoff = times[i] ?? cutoff;
    }
    if (planned === 0) return { blobs: 0, bytes: 0 };

    // Victims older than the cutoff, then those exactly at it until enough is freed.
    const atCutoff: Digest[] = [];
    let freedBlobs = 0;
    let freedBytes = 0;
    const victims: Digest[] = [];
    for await (const b of this.base.list()) {
      if (b.lastUsedMs > protectFrom || b.digest.sizeBytes === 0) continue;
      if (b.lastUsedMs < cutoff) victims.push(b.digest);
      else if (b.lastUsedMs === cutoff) atCutoff.push(b.digest);
      if (victims.length >= 256) {
        ({ freedBlobs, freedBytes } = await this.removeAll(victims.splice(0), freedBlobs, freedBytes));
      }
    }
    ({ freedBlobs, freedBytes } = await this.removeAll(victims, freedBlobs, freedBytes));
    for (const d of atCutoff) {
      if (freedBytes >= needBytes) break;
      ({ freedBlobs, freedBytes } = await this.removeAll([d], freedBlobs, freedBytes));
    }
    return { blobs: freedBlobs, bytes: freedBytes };
  }

  private async removeAll(
    victims: Digest[],
    freedBlobs: number,
    freedBytes: number,
  ): Promise<{ freedBlobs: number; freedBytes: number }> {
    const removed = await Promise.all(victims.map((d) => this.remove(d)));
    victims.forEach((d, i) => {
      if (removed[i]) {
        freedBlobs++;
        freedBytes += d.sizeBytes;
      }
    });
    return { freedBlobs, freedBytes };
  }
}

function grow(a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> {
  const b = new Float64Array(a.length * 2);
  b.set(a);
  return b;
}

class ReservedWriter implements BlobWriter {
  private released = false;
  private finished = false;

  constructor(
    private readonly inner: BlobWriter,
    private readonly commitInner: () => Promise<void>,
    private readonly releaseReservation: () => void,
  ) {}

  get digest(): Digest {
    return this.inner.digest;
  }

  get bytesWritten(): number {
    return this.inner.bytesWritten;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.finished) throw writeFinished(this.digest);
    try {
      await this.inner.write(chunk);
    } catch (err) {
      // Every writer below discards its upload when a write fails, so the space is free again.
      this.finished = true;
      this.release();
      throw err;
    }
  }

  async commit(): Promise<void> {
    if (this.finished) throw writeFinished(this.digest);
    this.finished = true;
    try {
      await this.commitInner();
    } finally {
      this.release();
    }
  }

  async abort(): Promise<void> {
    this.finished = true;
    try {
      await this.inner.abort();
    } finally {
      this.release();
    }
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.releaseReservation();
  }
}
