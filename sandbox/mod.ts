/**
 * Public surface of lre's sandbox library: typed bubblewrap sandboxes that
 * see only a declared Nix closure. Imports nothing from src/.
 */
export type { Closure, Mount, SandboxSpec } from "./spec";
export { FIXED_ISOLATION_ARGS, sortParentFirst, toBwrapArgs, toBwrapOptions } from "./bwrap-args";
export {
  ClosureResolver,
  DEFAULT_NIX_DB,
  DEFAULT_STORE_DIR,
  NotAStorePathError,
  UnknownStorePathError,
  findStorePathRefs,
  makeClosure,
  parseStorePath,
} from "./closure";
export type { ClosureResolverOptions } from "./closure";
export { DEFAULT_VIEWS_DIR, collectClosureViews, ensureClosureView } from "./closure-view";
export type { ClosureViewOptions, CollectViewsOptions } from "./closure-view";
export { SandboxStartError, findPidsCgroupDir, removeIdleCgroups, runSandboxed } from "./run";
export type { RunOptions, RunResult } from "./run";
export { actionSandboxSpec } from "./action-spec";
export { linkOrCopy, removeTree } from "./fs-util";
export type { ActionSandboxOptions } from "./action-spec";
export { actionSeccompFilter } from "./seccomp";
