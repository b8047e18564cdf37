import { ensureClosureView, runSandboxed } from "../../sandbox/mod";
import type { SandboxRuntime } from "./local-executor";

export type ClosureViewOptions = Parameters<typeof ensureClosureView>[1];

/**
 * Binds the executor's SandboxRuntime seam to the real sandbox library
 * (closure views and bubblewrap). The seam exists so the executor's phases
 * can be read and tested as data in, data out; production always uses this.
 */
export function sandboxRuntime(viewOptions: ClosureViewOptions): SandboxRuntime {
  return {
    closureView: (closure) => ensureClosureView(closure, viewOptions),
    run: (spec, options) => runSandboxed(spec, options),
  };
}
