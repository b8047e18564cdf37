import { randomUUID } from "node:crypto";
import type { Clock } from "../clock";
import { systemClock } from "../clock";

export type OperationStage = "queued" | "executing" | "done";

/** One scheduled piece of work, watched by every Execute or WaitExecution call interested in it. */
export interface ScheduledOperation<T> {
  /** Unique, kept for `retainMs` after completion so WaitExecution can find it. */
  readonly name: string;
  readonly stage: OperationStage;
  readonly queuedAtMs: number;
  /** Settles when the work is done; rejects only when the work itself threw. */
  readonly done: Promise<T>;
  /** Called on every stage change; returns an unsubscribe function. */
  subscribe(listener: (stage: OperationStage) => void): () => void;
}

export interface SubmitRequest<T> {
  /** Who asked: fairness is round-robin between clients, FIFO within one. */
  readonly client: string;
  /**
   * Work with the same key while one is queued or running is not started
   * again: the caller joins the existing operation. Leave unset for work that
   * must not be merged (REAPI do_not_cache).
   */
  readonly dedupKey?: string;
  /**
   * When true the operation still shows "queued" once it holds a slot, until
   * the work calls `executing()` (for Execute: when the sandboxed process
   * starts, after its inputs are staged). @default false: executing once started
   */
  readonly reportsExecuting?: boolean;
  /**
   * `releaseSlot()` frees the operation's slot before the work settles, for a
   * tail that needs no slot (e.g. waiting for a cache write's fsync); the
   * operation stays in flight, and joinable, until the work settles.
   */
  readonly run: (op: { readonly queuedAtMs: number; executing(): void; releaseSlot(): void }) => Promise<T>;
}

export interface SchedulerOptions {
  /** Operations running at once. */
  readonly jobs: number;
  /** How long finished operations stay visible to WaitExecution. @default 10 minutes */
  readonly retainMs?: number;
  readonly clock?: Clock;
  /** Prefix of operation names. @default "operations/" */
  readonly namePrefix?: string;
}

export interface SchedulerStats {
  readonly queued: number;
  readonly running: number;
  /** Operations finished since start. */
  readonly done: number;
  /** Submissions that joined an operation already queued or running. */
  readonly deduplicated: number;
  /** Clients with queued work. */
  readonly clients: number;
}

class Operation<T> implements ScheduledOperation<T> {
  stage: OperationStage = "queued";
  readonly done: Promise<T>;
  doneAtMs = 0;
  private readonly listeners = new Set<(stage: OperationStage) => void>();
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;

  constructor(
    readonly name: string,
    readonly queuedAtMs: number,
    readonly request: SubmitRequest<T>,
  ) {
    this.done = new Promise<T>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // Waiters attach their own handlers; this keeps a failure nobody awaits from crashing the process.
    this.done.catch(() => {});
  }

  subscribe(listener: (stage: OperationStage) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  setStage(stage: OperationStage): void {
    this.stage = stage;
    for (const l of [...this.listeners]) l(stage);
  }
}

/**
 * The execution queue: at most `jobs` operations run at once; waiting work is
 * taken round-robin by client so one big build cannot starve another's
 * actions; identical work already in flight is joined rather than repeated.
 */
export class Scheduler<T> {
  private readonly clock: Clock;
  private readonly retainMs: number;
  private readonly prefix: string;
  private readonly byName = new Map<string, Operation<T>>();
  private readonly inFlight = new Map<string, Operation<T>>();
  private readonly queues = new Map<string, Operation<T>[]>();
  /** Clients with queued work, in round-robin order. */
  private ring: string[] = [];
  private cursor = 0;
  private readonly finished: Operation<T>[] = [];
  private running = 0;
  private doneCount = 0;
  private deduplicated = 0;

  constructor(private readonly opts: SchedulerOptions) {
    if (!Number.isInteger(opts.jobs) || opts.jobs < 1) throw new RangeError(`jobs must be a positive integer, got ${opts.jobs}`);
    this.clock = opts.clock ?? systemClock;
    this.retainMs = opts.retainMs ?? 10 * 60_000;
    this.prefix = opts.namePrefix ?? "operations/";
  }

  /** Queues work, or joins identical work in flight (`joined` true). */
  submit(req: SubmitRequest<T>): { op: ScheduledOperation<T>; joined: boolean } {
    this.prune();
    if (req.dedupKey !== undefined) {
      const existing = this.inFlight.get(req.dedupKey);
      if (existing !== undefined) {
        this.deduplicated++;
        return { op: existing, joined: true };
      }
    }
    const op = new Operation<T>(`${this.prefix}${randomUUID()}`, this.clock.nowMs(), req);
    this.byName.set(op.name, op);
    if (req.dedupKey !== undefined) this.inFlight.set(req.dedupKey, op);
    let q = this.queues.get(req.client);
    if (q === undefined) {
      q = [];
      this.queues.set(req.client, q);
      this.ring.push(req.client);
    }
    q.push(op);
    this.dispatch();
    return { op, joined: false };
  }

  /** A queued, running or recently finished operation. */
  find(name: string): ScheduledOperation<T> | undefined {
    this.prune();
    return this.byName.get(name);
  }

  stats(): SchedulerStats {
    let queued = 0;
    for (const q of this.queues.values()) queued += q.length;
    return { queued, running: this.running, done: this.doneCount, deduplicated: this.deduplicated, clients: this.queues.size };
  }

  private dispatch(): void {
    while (this.running < this.opts.jobs && this.ring.length > 0) {
      if (this.cursor >= this.ring.length) this.cursor = 0;
      const client = this.ring[this.cursor]!;
      const q = this.queues.get(client)!;
      const op = q.shift()!;
      if (q.length === 0) {
        this.queues.delete(client);
        this.ring.splice(this.cursor, 1); // the next client slides into this slot
      } else {
        this.cursor++;
      }
      this.start(op);
    }
  }

  private start(op: Operation<T>): void {
    this.running++;
    if (!op.request.reportsExecuting) op.setStage("executing");
    const executing = (): void => {
      if (op.stage === "queued") op.setStage("executing");
    };
    let holding = true;
    const releaseSlot = (): void => {
      if (!holding) return;
      holding = false;
      this.running--;
      this.dispatch();
    };
    Promise.resolve()
      .then(() => op.request.run({ queuedAtMs: op.queuedAtMs, executing, releaseSlot }))
      .then(
        (v) => op.resolve(v),
        (e: unknown) => op.reject(e),
      )
      .finally(() => {
        if (holding) {
          holding = false;
          this.running--;
        }
        this.doneCount++;
        if (op.request.dedupKey !== undefined && this.inFlight.get(op.request.dedupKey) === op) {
          this.inFlight.delete(op.request.dedupKey);
        }
        op.doneAtMs = this.clock.nowMs();
        this.finished.push(op);
        op.setStage("done");
        this.dispatch();
      });
  }

  private prune(): void {
    const limit = this.clock.nowMs() - this.retainMs;
    while (this.finished.length > 0 && this.finished[0]!.doneAtMs < limit) {
      this.byName.delete(this.finished.shift()!.name);
    }
  }
}
