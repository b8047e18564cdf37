import type { ActionCache } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import { systemClock } from "../clock";
import type { DigestConfig } from "../digest/instance-name";
import type { ServiceEntry } from "../grpc/service-entry";
import type { Storage, StorageStats } from "../storage/open-storage";
import { createForwardingExecutionService } from "./forwarding-execution-service";
import { ReadThroughActionCache } from "./read-through-action-cache";
import { ReadThroughBlobStore } from "./read-through-blob-store";
import { UpstreamClient, type UpstreamTimeouts } from "./upstream-client";
import type { UpstreamConfig } from "./upstream-config";
import { UpstreamHealth } from "./upstream-health";
import type { UpstreamLog } from "./upstream-log";
import { publishUpstreamStatus } from "./upstream-status";
import { UpstreamUploader } from "./upstream-uploader";
import { WriteBehindActionCache } from "./write-behind-action-cache";
import { WriteBehindBlobStore } from "./write-behind-blob-store";
import { WriteBehindQueue } from "./write-behind-queue";

export interface RunningUpstream {
  /** The store to serve from: write-behind over read-through over the local store. */
  readonly storage: Storage;
  /** The Execution service to mount given the local one (undefined with --no-exec); undefined when there is none. */
  execution(local: ServiceEntry | undefined): ServiceEntry | undefined;
  /** Stops the uploader (the queue stays in LMDB) and the status file; the local storage is the caller's to close. */
  close(): Promise<void>;
}

/**
 * Wires `lre serve --upstream`: the decorators around the local store, the
 * persisted queue and its uploader, and the status file for `lre stats`.
 *
 *   served CAS = WriteBehindBlobStore(ReadThroughBlobStore(local CAS))
 *   served AC  = WriteBehindActionCache(ReadThroughActionCache(local AC))
 *
 * Write-behind sits outside read-through so that blobs and results copied
 * from the upstream are not queued to go straight back to it.
 */
export async function startUpstream(
  cfg: UpstreamConfig,
  storage: Storage,
  o: { dataDir: string; digests: DigestConfig; log: UpstreamLog; timeouts?: Partial<UpstreamTimeouts> },
): Promise<RunningUpstream> {
  const log = o.log;
  const client = new UpstreamClient(cfg, o.timeouts);
  const health = new UpstreamHealth(systemClock, (reachable, detail) => {
    if (reachable) log.info(`upstream ${cfg.url} is reachable`);
    else log.warn(`upstream ${cfg.url} is unreachable (${detail}); serving from the local store only and queueing uploads`);
  });
  const queue = await WriteBehindQueue.open(o.dataDir);
  const blobInstance = cfg.instance ?? "";
  const readCas = new ReadThroughBlobStore(storage.cas, client, health, { instance: blobInstance, log });
  const readAc = new ReadThroughActionCache(storage.ac, storage.cas, readCas, client, health, {
    ...(cfg.instance === undefined ? {} : { instance: cfg.instance }),
    log,
  });
  const uploader = new UpstreamUploader(queue, storage.cas, storage.ac, client, health, {
    ...(cfg.instance === undefined ? {} : { instance: cfg.instance }),
    log,
  });
  const served = new FrontStorage(storage, new WriteBehindBlobStore(readCas, queue), new WriteBehindActionCache(readAc, queue));
  const status = publishUpstreamStatus(o.dataDir, () => {
    const h = health.current();
    return {
      url: cfg.url,
      reachable: h.reachable ?? null,
      queued: queue.length(),
      lastError: h.lastError ?? null,
      lastErrorAt: h.lastErrorAt ?? null,
      ...uploader.stats,
      fetchedBlobs: readCas.fetchedBlobs,
      fetchedResults: readAc.fetchedResults,
      executeUpstream: cfg.execute,
    };
  });
  const pending = queue.length();
  if (pending > 0) log.info(`write-behind: ${pending} uploads to ${cfg.url} left from before; resuming`);
  uploader.start();

  let closed = false;
  return {
    storage: served,
    execution(local) {
      if (cfg.execute === "never") return local;
      return createForwardingExecutionService({
        mode: cfg.execute,
        ...(local === undefined ? {} : { local }),
        upstream: client,
        health,
        uploader,
        localCas: storage.cas,
        digests: o.digests,
        ...(cfg.instance === undefined ? {} : { instance: cfg.instance }),
        log,
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await uploader.stop();
      status.stop();
      client.close();
      await queue.close();
    },
  };
}

/** The local Storage with the served CAS and AC swapped in; everything else (stats, gc, close) is the local store's. */
class FrontStorage implements Storage {
  constructor(
    private readonly local: Storage,
    readonly cas: BlobStore,
    readonly ac: ActionCache,
  ) {}
  stats(): Promise<StorageStats> {
    return this.local.stats();
  }
  gc(targetBytes: number) {
    return this.local.gc(targetBytes);
  }
  recordAcLookup(hit: boolean): void {
    this.local.recordAcLookup(hit);
  }
  close(): Promise<void> {
    return this.local.close();
  }
}
