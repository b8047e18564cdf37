/**
 * A sandbox described as plain data. `toBwrapArgs` (bwrap-args.ts) turns it
 * into bubblewrap's argument list; nothing here touches the filesystem.
 * This module imports nothing from src/: lre depends on it, never the reverse.
 */

export type Mount =
  /** Read-only bind of a host path (the closure view goes to /nix/store this way, as ONE mount). */
  | { readonly kind: "ro-bind"; readonly source: string; readonly target: string }
  /** Read-write bind of a host path (the action's input root). */
  | { readonly kind: "bind"; readonly source: string; readonly target: string }
  /** A private tmpfs, optionally size-capped. */
  | { readonly kind: "tmpfs"; readonly target: string; readonly sizeBytes?: number }
  /** An empty directory created inside the sandbox. */
  | { readonly kind: "dir"; readonly target: string }
  | { readonly kind: "symlink"; readonly target: string; readonly linkTo: string }
  | { readonly kind: "proc"; readonly target: "/proc" }
  | { readonly kind: "dev"; readonly target: "/dev" };

export interface SandboxSpec {
  /** Applied parent first, whatever the order given. */
  readonly mounts: readonly Mount[];
  /** The complete environment; the host's is cleared. */
  readonly env: Readonly<Record<string, string>>;
  /** Absolute working directory inside the sandbox. */
  readonly cwd: string;
  readonly argv: readonly string[];
  /** "none": own network namespace with only loopback. */
  readonly network: "none" | "host";
  readonly hostname?: string;
}

/** The closure of a set of Nix store paths, as read from Nix's database. */
export interface Closure {
  /** Sorted, deduplicated absolute store paths. */
  readonly paths: readonly string[];
  /** Stable hash of `paths`, naming the closure view on disk. */
  readonly hash: string;
}
