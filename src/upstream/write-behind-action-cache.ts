import type { ActionCache, CachedResult } from "../ac/action-cache";
import type { Digest } from "../digest/digest";
import type { WriteBehindQueue } from "./write-behind-queue";

/**
 * Queues every action result stored through it (client uploads and lre's own
 * executions) for upload to the upstream; the uploader sends the blobs it
 * references first. Results copied from the upstream bypass this layer.
 */
export class WriteBehindActionCache implements ActionCache {
  constructor(
    private readonly base: ActionCache,
    private readonly queue: WriteBehindQueue,
  ) {}

  get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    return this.base.get(instance, action);
  }

  async put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    await this.base.put(instance, action, entry);
    await this.queue.enqueueAction(instance, action);
  }

  close(): Promise<void> {
    return this.base.close();
  }
}
