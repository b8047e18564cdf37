import type { Digest } from "../digest/digest";
import type { ActionCache, CachedResult } from "./action-cache";

/**
 * Hides results built with a server default closure other than the current
 * one. `lre serve --closure` is not part of the action digest, so without
 * this a restart with another toolchain would keep serving results of the
 * old one (through GetActionResult; Execute checks the same itself).
 */
export class ClosureCheckingActionCache implements ActionCache {
  constructor(
    private readonly inner: ActionCache,
    /** The current default closure's hash; undefined when there is none. */
    private readonly currentClosureHash: () => string | undefined,
  ) {}

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    const entry = await this.inner.get(instance, action);
    if (entry?.closureHash !== undefined && entry.closureHash !== this.currentClosureHash()) return undefined;
    return entry;
  }

  put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    return this.inner.put(instance, action, entry);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
