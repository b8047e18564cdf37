import type { Digest } from "../digest/digest";
import type { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/** Who produced an action-cache entry: lre's own sandbox, or a client's UpdateActionResult. */
export type ResultOrigin = "sandbox" | "client";

export interface CachedResult {
  readonly result: ActionResult;
  readonly origin: ResultOrigin;
  /**
   * For sandbox results of actions that used the server's default closure
   * (`lre serve --closure`, not part of the action digest): which closure.
   * A result recorded with a closure other than the current default is stale.
   */
  readonly closureHash?: string;
}

/**
 * Action results by action digest, separate per instance name. Decorators add
 * validation and completeness checking (a hit whose blobs are gone is a miss).
 */
export interface ActionCache {
  get(instance: string, action: Digest): Promise<CachedResult | undefined>;
  /** Resolves only once durable. */
  put(instance: string, action: Digest, entry: CachedResult): Promise<void>;
  close(): Promise<void>;
}
