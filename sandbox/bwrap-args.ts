/**
 * SandboxSpec -> bubblewrap argv. Pure: no filesystem, no process state, so
 * the exact argument list is what the tests pin down.
 *
 * Fixed isolation choices, and why:
 *  - `--unshare-all`: fresh user, ipc, pid, net, uts and cgroup namespaces.
 *    The pid namespace is what lets us kill every descendant at once (when
 *    bwrap's pid 1 dies the kernel kills the namespace), including daemons
 *    that double-fork away from the action.
 *  - `--unshare-user` explicitly, even as root: `--unshare-all` only *tries*
 *    it, and without a user namespace `--disable-userns` is refused. With it,
 *    whatever capabilities remain are scoped to the sandbox's namespace.
 *  - `--disable-userns`: the action cannot create nested user namespaces,
 *    the kernel's largest unprivileged attack surface.
 *  - `--cap-drop ALL`: as root bwrap keeps every capability by default; an
 *    action needs none (verified: CapEff is 0 inside).
 *  - `--die-with-parent`: if lre dies (even SIGKILL) the sandbox dies too.
 *  - `--new-session`: no controlling terminal, so no TIOCSTI injection.
 *  - `--clearenv` then one `--setenv` per variable, sorted for a stable argv.
 *    bwrap applies these to its own environment while parsing, so order
 *    matters. Note bwrap itself adds PWD (= cwd) after `--chdir`.
 *  - network "host" is the only way to get `--share-net`; "none" leaves a
 *    private namespace with loopback only.
 */
import type { Mount, SandboxSpec } from "./spec";

/** Emitted for every sandbox, before anything spec-dependent. */
export const FIXED_ISOLATION_ARGS: readonly string[] = [
  "--unshare-all",
  "--unshare-user",
  "--disable-userns",
  "--cap-drop",
  "ALL",
  "--die-with-parent",
  "--new-session",
];

export function toBwrapArgs(spec: SandboxSpec): string[] {
  return [...toBwrapOptions(spec), "--", ...spec.argv];
}

/**
 * Everything before the command: the part that may travel through
 * `--args FD` (bwrap reads only options from there, never the command).
 */
export function toBwrapOptions(spec: SandboxSpec): string[] {
  validate(spec);
  const args: string[] = [...FIXED_ISOLATION_ARGS];
  if (spec.network === "host") args.push("--share-net");
  if (spec.hostname !== undefined) args.push("--hostname", spec.hostname);
  args.push("--clearenv");
  for (const key of Object.keys(spec.env).sort()) args.push("--setenv", key, spec.env[key] as string);
  for (const mount of sortParentFirst(spec.mounts)) args.push(...mountArgs(mount));
  args.push("--chdir", spec.cwd);
  return args;
}

/**
 * bwrap applies mounts in order, so a parent mounted after its child would
 * hide it. Ordering by depth puts every parent first; the sort is stable so
 * mounts at the same depth (or the same target) keep the caller's order.
 */
export function sortParentFirst(mounts: readonly Mount[]): Mount[] {
  return mounts
    .map((mount, index) => ({ mount, index, depth: pathDepth(mount.target) }))
    .sort((a, b) => a.depth - b.depth || a.index - b.index)
    .map((m) => m.mount);
}

function pathDepth(path: string): number {
  return path.split("/").filter((segment) => segment !== "").length;
}

function mountArgs(mount: Mount): string[] {
  switch (mount.kind) {
    case "ro-bind":
      return ["--ro-bind", mount.source, mount.target];
    case "bind":
      return ["--bind", mount.source, mount.target];
    case "tmpfs":
      return mount.sizeBytes === undefined ? ["--tmpfs", mount.target] : ["--size", String(mount.sizeBytes), "--tmpfs", mount.target];
    case "dir":
      return ["--dir", mount.target];
    case "symlink":
      return ["--symlink", mount.linkTo, mount.target];
    case "proc":
      return ["--proc", mount.target];
    case "dev":
      return ["--dev", mount.target];
    default: {
      const unknown: never = mount;
      throw new TypeError(`Unknown mount kind in ${JSON.stringify(unknown)}`);
    }
  }
}

function validate(spec: SandboxSpec): void {
  const hasNul = (s: string): boolean => s.includes("\0");
  if (spec.argv.length === 0) throw new TypeError("Cannot build a sandbox without a command: argv is empty");
  if (!spec.cwd.startsWith("/")) throw new TypeError(`Cannot use working directory "${spec.cwd}": it must be absolute`);
  for (const arg of spec.argv) if (hasNul(arg)) throw new TypeError(`Cannot pass argument ${JSON.stringify(arg)}: it contains NUL`);
  for (const [key, value] of Object.entries(spec.env)) {
    if (key === "" || key.includes("=") || hasNul(key) || hasNul(value)) {
      throw new TypeError(`Cannot set environment variable ${JSON.stringify(key)}: names must be non-empty without "=" or NUL, values without NUL`);
    }
  }
  for (const mount of spec.mounts) {
    const paths = mount.kind === "ro-bind" || mount.kind === "bind" ? [mount.target, mount.source] : [mount.target];
    for (const p of paths) {
      if (!p.startsWith("/") || hasNul(p) || p.split("/").includes("..")) {
        throw new TypeError(`Cannot mount ${JSON.stringify(p)} (${mount.kind}): paths must be absolute, without ".." or NUL`);
      }
    }
    if (mount.kind === "tmpfs" && mount.sizeBytes !== undefined && (!Number.isSafeInteger(mount.sizeBytes) || mount.sizeBytes <= 0)) {
      throw new RangeError(`Cannot size tmpfs "${mount.target}" to ${mount.sizeBytes} bytes: use a positive integer`);
    }
  }
  if (spec.hostname !== undefined && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(spec.hostname)) {
    throw new TypeError(`Cannot use hostname "${spec.hostname}": use letters, digits, "." and "-" (at most 63)`);
  }
}
