import type { Digest } from "../digest/digest";
import { digestKey } from "../digest/digest";
import { GrpcCode, RpcError } from "../errors";
import { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ActionCache, CachedResult, ResultOrigin } from "./action-cache";

/**
 * An ActionCache in a Map, for tests and throwaway servers. Results are kept
 * encoded, as the LMDB cache keeps them, so a caller mutating the object it put
 * or got cannot change what the next reader sees.
 */
export class MemoryActionCache implements ActionCache {
  private readonly entries = new Map<string, { bytes: Uint8Array; origin: ResultOrigin; closureHash?: string }>();
  private closed = false;

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    this.checkOpen();
    const e = this.entries.get(keyOf(instance, action));
    if (e === undefined) return undefined;
    return { result: ActionResult.decode(e.bytes), origin: e.origin, ...(e.closureHash === undefined ? {} : { closureHash: e.closureHash }) };
  }

  async put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    this.checkOpen();
    const bytes = ActionResult.encode(entry.result).finish();
    this.entries.set(keyOf(instance, action), { bytes, origin: entry.origin, ...(entry.closureHash === undefined ? {} : { closureHash: entry.closureHash }) });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.entries.clear();
  }

  private checkOpen(): void {
    if (this.closed) throw new RpcError(GrpcCode.UNAVAILABLE, "the action cache is closed; the server is shutting down, retry later");
  }
}

// NUL cannot occur in an instance name, so instance and digest never blur together.
function keyOf(instance: string, action: Digest): string {
  return `${instance}\0${digestKey(action)}`;
}
