import type { ActionCache, CachedResult } from "../ac/action-cache";
import { validateActionResult } from "../ac/validate-action-result";
import type { BlobStore } from "../cas/blob-store";
import { type Digest, digestKey, formatDigest } from "../digest/digest";
import { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ReadThroughBlobStore } from "./read-through-blob-store";
import { referencedBlobs } from "../ac/referenced-blobs";
import type { UpstreamClient } from "./upstream-client";
import type { UpstreamHealth } from "./upstream-health";
import { type UpstreamLog, messageOf, silentLog } from "./upstream-log";

export interface ReadThroughActionCacheOptions {
  /** Upstream instance name; undefined means the request's own. */
  readonly instance?: string;
  readonly log?: UpstreamLog;
}

/**
 * A local action-cache miss is asked of the upstream. A result found there is
 * only taken once every blob it references (outputs, stdout/stderr, Trees and
 * the files inside them) has been copied into the local CAS, and is then
 * stored in the local action cache. The answer always comes from the local
 * (completeness-checking) cache, so a hit served here never depends on the
 * upstream staying up while the client downloads its outputs. Any upstream
 * failure is a miss; the action then runs or is uploaded as usual. So is a
 * result lre would refuse from a client (output paths escaping the working
 * directory, malformed digests): the upstream is another server, not a
 * trusted part of this one, and what it says is checked before any of it is
 * fetched or kept.
 */
export class ReadThroughActionCache implements ActionCache {
  private readonly log: UpstreamLog;
  private readonly inflight = new Map<string, Promise<CachedResult | undefined>>();
  /** Results copied from the upstream, for `lre stats`. */
  fetchedResults = 0;

  constructor(
    private readonly local: ActionCache,
    private readonly localCas: BlobStore,
    private readonly cas: ReadThroughBlobStore,
    private readonly upstream: UpstreamClient,
    private readonly health: UpstreamHealth,
    private readonly options: ReadThroughActionCacheOptions = {},
  ) {
    this.log = options.log ?? silentLog;
  }

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    const hit = await this.local.get(instance, action);
    if (hit !== undefined || !this.health.usable()) return hit;
    const key = `${instance}\0${digestKey(action)}`;
    let running = this.inflight.get(key);
    if (running === undefined) {
      running = this.fromUpstream(instance, action).finally(() => this.inflight.delete(key));
      this.inflight.set(key, running);
    }
    return running;
  }

  put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    return this.local.put(instance, action, entry);
  }

  close(): Promise<void> {
    return this.local.close();
  }

  private async fromUpstream(instance: string, action: Digest): Promise<CachedResult | undefined> {
    const upInstance = this.options.instance ?? instance;
    let result: ActionResult | undefined;
    try {
      result = await this.upstream.getActionResult(upInstance, action);
      this.health.succeeded();
    } catch (err) {
      this.health.failed(err);
      this.log.debug(`read-through: upstream GetActionResult failed, treating as a miss: ${messageOf(err)}`);
      return undefined;
    }
    if (result === undefined) return undefined;
    try {
      validateActionResult(result, action.fn);
    } catch (err) {
      // Worth a warning, not a debug line: an upstream serving such results is broken or hostile.
      this.log.warn(
        `read-through: upstream result for ${formatDigest(action)} (instance "${upInstance}") is not valid, treating it as a miss: ${messageOf(err)}`,
      );
      return undefined;
    }
    try {
      // Inlined bytes are not kept: the local entry references blobs, like every other.
      const stored = ActionResult.fromPartial({ ...result, stdoutRaw: Buffer.alloc(0), stderrRaw: Buffer.alloc(0) });
      for (const f of stored.outputFiles) f.contents = Buffer.alloc(0);
      const { blobs } = await referencedBlobs(stored, action.fn, async (tree) => {
        await this.cas.fetch([tree], upInstance);
        return this.localCas.get(tree);
      });
      const got = await this.cas.fetch(blobs, upInstance);
      const stillMissing = await this.localCas.findMissing(blobs.filter((d) => !got.has(digestKey(d))));
      if (stillMissing.length > 0) {
        this.log.debug(
          `read-through: upstream result for ${formatDigest(action)} lacks ${stillMissing.length} blob(s) (e.g. ${formatDigest(stillMissing[0]!)}); treating as a miss`,
        );
        return undefined;
      }
      await this.local.put(instance, action, { result: stored, origin: "client" });
      this.fetchedResults++;
    } catch (err) {
      this.log.debug(`read-through: upstream result for ${formatDigest(action)} not usable: ${messageOf(err)}`);
      return undefined;
    }
    return this.local.get(instance, action);
  }
}
