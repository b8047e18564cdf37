import * as grpc from "@grpc/grpc-js";
import type { ServiceEntry } from "./service-entry";

/**
 * Counts calls in flight so shutdown can wait for them. grpc-js's tryShutdown
 * is no help here: under Bun's http2 it reports "done" at once while uploads
 * are still streaming, and the client then sees UNAVAILABLE mid-upload.
 * Once draining starts, new calls are refused with UNAVAILABLE (clients retry
 * against the next server) while the ones already running may finish.
 */
export class CallTracker {
  private inFlight = 0;
  private draining = false;
  private waiters: Array<() => void> = [];

  get count(): number {
    return this.inFlight;
  }

  /** Wraps every handler of a service so its calls are counted. */
  wrap(entry: ServiceEntry): ServiceEntry {
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const [name, handler] of Object.entries(entry.implementation)) {
      implementation[name] = this.wrapHandler(handler as (...args: unknown[]) => unknown);
    }
    return { definition: entry.definition, implementation };
  }

  /** Refuses new calls and resolves when every running call has ended, or after `graceMs`. */
  drain(graceMs: number): Promise<boolean> {
    this.draining = true;
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), Math.max(0, graceMs));
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  private wrapHandler(handler: (...args: unknown[]) => unknown): grpc.UntypedHandleCall {
    const tracker = this;
    // grpc-js tells handler kinds apart by arity: (call, callback) for unary and
    // client-streaming calls, (call) for server-streaming and bidi ones.
    const wrapped = function (call: TrackedCall, callback?: (...a: unknown[]) => void) {
      if (tracker.draining) return refuse(call, callback);
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        tracker.inFlight--;
        if (tracker.inFlight === 0) for (const w of tracker.waiters.splice(0)) w();
      };
      tracker.inFlight++;
      call.once("cancelled", end);
      if (callback !== undefined) {
        return handler(call, (...a: unknown[]) => {
          end();
          callback(...a);
        });
      }
      call.once("finish", end);
      call.once("close", end);
      call.once("error", end);
      return handler(call);
    };
    return wrapped as unknown as grpc.UntypedHandleCall;
  }
}

interface TrackedCall {
  once(event: string, fn: () => void): unknown;
  emit?(event: string, ...args: unknown[]): unknown;
}

const SHUTTING_DOWN: Partial<grpc.StatusObject> = {
  code: grpc.status.UNAVAILABLE,
  details: "lre is shutting down; retry against the restarted server",
};

function refuse(call: TrackedCall, callback?: (...a: unknown[]) => void): void {
  if (callback !== undefined) callback(SHUTTING_DOWN, null);
  else call.emit?.("error", SHUTTING_DOWN);
}
