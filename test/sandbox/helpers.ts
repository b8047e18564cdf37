/**
 * Shared set-up for the sandbox tests: the fixture toolchain, its closures
 * and views, and a spec builder shaped like the one the executor uses.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClosureResolver, actionSandboxSpec, ensureClosureView } from "../../sandbox/mod";
import type { Closure, SandboxSpec } from "../../sandbox/mod";
import { ensureNixToolchain } from "../support/nix-fixture";
import type { NixToolchain } from "../support/nix-fixture";

/** On the /nix/store filesystem, so views are hardlink farms; kept across runs like the real cache. */
export const TEST_VIEWS_DIR = "/nix/var/lre/test-views";

export interface SandboxWorld {
  readonly nix: NixToolchain;
  readonly resolver: ClosureResolver;
  /** Closure of toolchain-b: toolchain-b, toolchain-a, busybox. */
  readonly closure: Closure;
  readonly view: string;
}

let world: Promise<SandboxWorld> | undefined;

export function sandboxWorld(): Promise<SandboxWorld> {
  world ??= (async () => {
    const nix = await ensureNixToolchain();
    const resolver = new ClosureResolver();
    const closure = resolver.resolve([nix.toolchainB]);
    const view = await ensureClosureView(closure, { viewsDir: TEST_VIEWS_DIR });
    return { nix, resolver, closure, view };
  })();
  return world;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `lre-${prefix}-`));
}

/** An action's sandbox: the closure view at /nix/store, an input root at /build, a 1 MiB /tmp. */
export function actionSpec(w: SandboxWorld, inputRoot: string, script: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  const { hostname: _ignored, ...spec } = actionSandboxSpec({
    closureView: w.view,
    inputRoot,
    inputRootTarget: "/build",
    argv: [w.nix.shell, "-c", script],
    env: { PATH: `${w.nix.toolchainA}/bin`, HOME: "/build" },
    tmpSizeBytes: 1024 * 1024,
  });
  return { ...spec, ...extra };
}
