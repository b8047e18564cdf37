import type { BlobStore, BlobWriter, StoredBlob } from "../cas/blob-store";
import { type Digest, digestKey, formatDigest, isEmptyDigest } from "../digest/digest";
import { GrpcCode, isRpcError } from "../errors";
import type { UpstreamClient } from "./upstream-client";
import type { UpstreamHealth } from "./upstream-health";
import { type UpstreamLog, messageOf, silentLog } from "./upstream-log";

export interface ReadThroughOptions {
  /** Instance name for the upstream's CAS. lre's CAS is shared by all instances, so one name serves every blob. */
  readonly instance: string;
  readonly log?: UpstreamLog;
  /** Blobs up to this size are fetched with BatchReadBlobs, larger ones with ByteStream Read. @default 1 MiB */
  readonly batchBlobMaxBytes?: number;
  /** Bytes per BatchReadBlobs call, under the 4 MB every REAPI server accepts. @default 3 MB */
  readonly batchMaxBytes?: number;
  /** Most bytes one findMissing call fetches; beyond it blobs are reported missing and the client uploads them. @default 256 MiB */
  readonly findMissingFetchMaxBytes?: number;
}

/**
 * A front for another REAPI server's CAS: a blob missing locally is fetched
 * from the upstream, verified by the local stack (a VerifyingBlobStore below
 * rejects bytes that do not match their digest) and kept, then served from
 * the local store. So "present" always means "present locally": findMissing
 * reports a blob present only after it has been copied here, which keeps the
 * lifetime promise of FindMissing (reliability-targets §4) independent of
 * the upstream staying up. Any upstream failure degrades to local-only
 * answers; the client never sees it.
 */
export class ReadThroughBlobStore implements BlobStore {
  readonly name: string;
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly log: UpstreamLog;
  private readonly batchBlobMax: number;
  private readonly batchMax: number;
  private readonly findMissingFetchMax: number;
  /** Blobs copied from the upstream, for `lre stats`. */
  fetchedBlobs = 0;

  constructor(
    private readonly local: BlobStore,
    private readonly upstream: UpstreamClient,
    private readonly health: UpstreamHealth,
    private readonly options: ReadThroughOptions,
  ) {
    this.name = `read-through(${local.name})`;
    this.log = options.log ?? silentLog;
    this.batchBlobMax = options.batchBlobMaxBytes ?? 1024 * 1024;
    this.batchMax = options.batchMaxBytes ?? 3_000_000;
    this.findMissingFetchMax = options.findMissingFetchMaxBytes ?? 256 * 1024 * 1024;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const missing = await this.local.findMissing(digests);
    if (missing.length === 0) return missing;
    let budget = this.findMissingFetchMax;
    const affordable = missing.filter((d) => {
      if (d.sizeBytes > budget) return false;
      budget -= d.sizeBytes;
      return true;
    });
    const fetched = await this.fetch(affordable);
    return missing.filter((d) => !fetched.has(digestKey(d)));
  }

  async get(digest: Digest): Promise<Uint8Array> {
    try {
      return await this.local.get(digest);
    } catch (err) {
      if (!isRpcError(err, GrpcCode.NOT_FOUND) || !(await this.fetchOne(digest))) throw err;
      return this.local.get(digest);
    }
  }

  async read(digest: Digest, offset?: number): Promise<AsyncIterable<Uint8Array>> {
    try {
      return await this.local.read(digest, offset);
    } catch (err) {
      if (!isRpcError(err, GrpcCode.NOT_FOUND) || !(await this.fetchOne(digest))) throw err;
      return this.local.read(digest, offset);
    }
  }

  put(digest: Digest, data: Uint8Array): Promise<void> {
    return this.local.put(digest, data);
  }

  beginWrite(digest: Digest): Promise<BlobWriter> {
    return this.local.beginWrite(digest);
  }

  delete(digests: readonly Digest[]): Promise<void> {
    return this.local.delete(digests);
  }

  async filePath(digest: Digest): Promise<string | undefined> {
    return this.local.filePath?.(digest);
  }

  list(): AsyncIterable<StoredBlob> {
    return this.local.list();
  }

  touch(digests: readonly Digest[]): Promise<void> {
    return this.local.touch(digests);
  }

  close(): Promise<void> {
    return this.local.close();
  }

  /**
   * Copies from the upstream those of `digests` it has and the local store
   * lacks. Returns the keys now present locally because of this call (or a
   * concurrent one). Never throws: failures leave blobs missing.
   */
  async fetch(digests: readonly Digest[], instance = this.options.instance): Promise<Set<string>> {
    const got = new Set<string>();
    const wanted: Digest[] = [];
    const seen = new Set<string>();
    const waits: Promise<void>[] = [];
    for (const d of digests) {
      if (isEmptyDigest(d)) continue;
      const k = digestKey(d);
      const running = this.inflight.get(k);
      if (running !== undefined) waits.push(running.then((ok) => void (ok && got.add(k))));
      else if (!seen.has(k)) {
        seen.add(k);
        wanted.push(d);
      }
    }
    if (wanted.length > 0 && this.health.usable()) {
      const work = this.fetchFresh(wanted, instance);
      for (const d of wanted) {
        const k = digestKey(d);
        const one = work.then((done) => done.has(k));
        this.inflight.set(k, one);
        void one.finally(() => this.inflight.delete(k));
      }
      for (const k of await work) got.add(k);
    }
    await Promise.all(waits);
    return got;
  }

  private async fetchOne(digest: Digest): Promise<boolean> {
    return (await this.fetch([digest])).has(digestKey(digest));
  }

  private async fetchFresh(wanted: readonly Digest[], instance: string): Promise<Set<string>> {
    const done = new Set<string>();
    let present: Digest[];
    try {
      const upstreamMissing = new Set((await this.upstream.findMissing(instance, wanted)).map(digestKey));
      this.health.succeeded();
      present = wanted.filter((d) => !upstreamMissing.has(digestKey(d)));
    } catch (err) {
      this.health.failed(err);
      this.log.debug(`read-through: upstream FindMissing failed, serving locally only: ${messageOf(err)}`);
      return done;
    }
    const small = present.filter((d) => d.sizeBytes <= this.batchBlobMax);
    const large = present.filter((d) => d.sizeBytes > this.batchBlobMax);
    const batches: Digest[][] = [];
    let batch: Digest[] = [];
    let bytes = 0;
    for (const d of small) {
      if (batch.length > 0 && bytes + d.sizeBytes > this.batchMax) {
        batches.push(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(d);
      bytes += d.sizeBytes;
    }
    if (batch.length > 0) batches.push(batch);
    await Promise.all([
      ...batches.map((b) => this.fetchBatch(b, instance, done)),
      ...large.map((d) => this.fetchStreamed(d, instance, done)),
    ]);
    return done;
  }

  private async fetchBatch(batch: readonly Digest[], instance: string, done: Set<string>): Promise<void> {
    let blobs: Map<string, Uint8Array>;
    try {
      blobs = await this.upstream.batchRead(instance, batch);
    } catch (err) {
      this.health.failed(err);
      this.log.debug(`read-through: upstream BatchReadBlobs failed: ${messageOf(err)}`);
      return;
    }
    await Promise.all(
      batch.map(async (d) => {
        const data = blobs.get(digestKey(d));
        if (data === undefined) return;
        try {
          await this.local.put(d, data);
          done.add(digestKey(d));
          this.fetchedBlobs++;
        } catch (err) {
          this.log.warn(`read-through: blob ${formatDigest(d)} from the upstream was not kept: ${messageOf(err)}`);
        }
      }),
    );
  }

  private async fetchStreamed(d: Digest, instance: string, done: Set<string>): Promise<void> {
    let writer: BlobWriter | undefined;
    try {
      writer = await this.local.beginWrite(d);
      for await (const chunk of this.upstream.read(instance, d)) await writer.write(chunk);
      await writer.commit();
      done.add(digestKey(d));
      this.fetchedBlobs++;
    } catch (err) {
      await writer?.abort();
      if (isRpcError(err) && err.message.startsWith("upstream ")) this.health.failed(err);
      this.log.warn(`read-through: blob ${formatDigest(d)} could not be copied from the upstream: ${messageOf(err)}`);
    }
  }
}
