import { GrpcCode } from "../errors";
import type { Clock } from "../clock";

/** What `lre stats` and the log say about the upstream. */
export interface UpstreamState {
  /** Undefined until the first call has finished. */
  readonly reachable: boolean | undefined;
  readonly lastError?: string;
  readonly lastErrorAt?: string;
}

const FIRST_COOLDOWN_MS = 1000;
const MAX_COOLDOWN_MS = 30_000;

/** Codes that say "the upstream (or the way to it) is not working", as opposed to "no such blob". */
export function isTransportFailure(code: number | undefined): boolean {
  return (
    code === GrpcCode.UNAVAILABLE ||
    code === GrpcCode.DEADLINE_EXCEEDED ||
    code === GrpcCode.UNKNOWN ||
    code === GrpcCode.INTERNAL ||
    code === GrpcCode.CANCELLED ||
    code === GrpcCode.UNAUTHENTICATED ||
    code === GrpcCode.PERMISSION_DENIED ||
    code === GrpcCode.RESOURCE_EXHAUSTED
  );
}

/**
 * Reachability of the upstream, shared by read-through, write-behind and
 * forwarding. After a transport failure, reads skip the upstream for a
 * cooldown that doubles up to 30 s, so a build never pays a connect timeout
 * per blob while the upstream is down; the uploader keeps probing and its
 * first success ends the cooldown.
 */
export class UpstreamHealth {
  private state: UpstreamState = { reachable: undefined };
  private cooldownMs = FIRST_COOLDOWN_MS;
  private skipUntilMs = 0;

  constructor(
    private readonly clock: Clock,
    private readonly onChange: (reachable: boolean, detail: string) => void = () => {},
  ) {}

  /** False while in the cooldown after a failure: callers then serve from the local store only. */
  usable(): boolean {
    return this.clock.nowMs() >= this.skipUntilMs;
  }

  current(): UpstreamState {
    return this.state;
  }

  succeeded(): void {
    this.cooldownMs = FIRST_COOLDOWN_MS;
    this.skipUntilMs = 0;
    if (this.state.reachable !== true) {
      this.state = { ...this.state, reachable: true };
      this.onChange(true, "");
    }
  }

  /** Records any failure as the last error; transport failures also make the upstream unreachable for a while. */
  failed(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const code = (err as { code?: unknown }).code;
    const transport = typeof code !== "number" || isTransportFailure(code);
    const wasReachable = this.state.reachable;
    this.state = {
      reachable: transport ? false : wasReachable,
      lastError: message,
      lastErrorAt: new Date(this.clock.nowMs()).toISOString(),
    };
    if (!transport) return;
    this.skipUntilMs = this.clock.nowMs() + this.cooldownMs;
    this.cooldownMs = Math.min(this.cooldownMs * 2, MAX_COOLDOWN_MS);
    if (wasReachable !== false) this.onChange(false, message);
  }
}
