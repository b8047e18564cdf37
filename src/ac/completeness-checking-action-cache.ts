import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import type { ActionCache, CachedResult } from "./action-cache";
import { requiredBlobs } from "./referenced-blobs";

/**
 * Returns a cached result only if every blob it references is still in the
 * CAS: output files, stdout/stderr, each output directory's Tree and every
 * file inside that Tree. A hit with a missing blob would send Bazel after
 * bytes that are gone (exit 39, reliability-targets I-4), so it is a miss and
 * the action runs again. Anything malformed in the entry is also a miss,
 * never an internal error. On a hit every referenced blob is touched, so
 * eviction spares what the client was just promised (E-4).
 */
export class CompletenessCheckingActionCache implements ActionCache {
  constructor(
    private readonly base: ActionCache,
    private readonly cas: BlobStore,
  ) {}

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    const entry = await this.base.get(instance, action);
    if (entry === undefined) return undefined;
    const referenced = await requiredBlobs(this.cas, entry.result, action.fn);
    if (referenced === undefined) return undefined;
    if ((await this.cas.findMissing(referenced)).length > 0) return undefined;
    await this.cas.touch(referenced);
    return entry;
  }

  put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    return this.base.put(instance, action, entry);
  }

  close(): Promise<void> {
    return this.base.close();
  }
}
