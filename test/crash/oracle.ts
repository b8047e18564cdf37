import { appendFileSync } from "node:fs";
import type { Digest } from "../../src/digest/digest";
import { digestKey } from "../../src/digest/digest";

/**
 * What the crash test knows for certain: an operation goes into `acked` only
 * after the server answered OK, and into `attempted` before its first byte is
 * sent. After a crash every acked operation must have survived; anything
 * attempted but not acked may or may not have, and bounds what the store may
 * hold beyond the acked set.
 *
 * Each entry is also appended to a JSON-lines log beside the data directory, so
 * a failing run can be replayed against the data it left behind.
 */
export interface AckedAction {
  readonly action: Digest;
  /** Every blob the stored ActionResult names (outputs and stdout). */
  readonly blobs: readonly Digest[];
  readonly outputPaths: readonly string[];
}

export class Oracle {
  readonly acked = new Map<string, Digest>();
  readonly attempted = new Map<string, Digest>();
  readonly actions = new Map<string, AckedAction>();
  readonly attemptedActions = new Set<string>();
  /** Blobs acked since the last full read-back, so each cycle re-hashes only what is new. */
  unverified = new Map<string, Digest>();

  constructor(private readonly logPath: string) {}

  attempt(d: Digest): void {
    this.attempted.set(digestKey(d), d);
  }

  ack(d: Digest, via: string): void {
    const key = digestKey(d);
    this.log({ op: "blob", via, hash: d.hash, size: d.sizeBytes });
    if (!this.acked.has(key)) this.unverified.set(key, d);
    this.acked.set(key, d);
  }

  attemptAction(action: Digest): void {
    this.attemptedActions.add(digestKey(action));
  }

  ackAction(a: AckedAction): void {
    this.log({ op: "action", hash: a.action.hash, size: a.action.sizeBytes, blobs: a.blobs.map((b) => `${b.hash}/${b.sizeBytes}`) });
    this.actions.set(digestKey(a.action), a);
  }

  note(event: Record<string, unknown>): void {
    this.log({ op: "note", ...event });
  }

  /** A random acked, non-empty blob, for action results to reference. */
  someAcked(pick: (n: number) => number): Digest | undefined {
    if (this.acked.size === 0) return undefined;
    const all = [...this.acked.values()];
    return all[pick(all.length)];
  }

  private log(entry: Record<string, unknown>): void {
    appendFileSync(this.logPath, JSON.stringify({ t: Date.now(), ...entry }) + "\n");
  }
}
