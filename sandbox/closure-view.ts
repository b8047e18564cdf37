/**
 * One directory per distinct closure that, bound read-only at /nix/store,
 * shows exactly the closure's store paths and nothing else.
 *
 * Why a hardlink farm: binding each store path separately costs bwrap 0.8 a
 * re-parse of the mount table per bind (quadratic: 200 binds ≈ 58 ms), and
 * pre-mounting views in lre's own namespace slows every later spawn. A plain
 * directory of hardlinks costs one bind, is built once per closure hash and
 * shares the store's inodes (no data copied). Hardlinks need the same
 * filesystem as /nix/store, hence the default location under /nix/var.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, symlinkSync } from "node:fs";
import { mkdir, readdir, rename, stat, utimes } from "node:fs/promises";
import { basename, join } from "node:path";
import { isErrno, linkOrCopy, removeTree } from "./fs-util";
import { isPathHeld } from "./in-use";
import type { Closure } from "./spec";

export const DEFAULT_VIEWS_DIR = "/nix/var/lre/views";

export interface ClosureViewOptions {
  /** Where views live; must be on the /nix/store filesystem for hardlinks. @default "/nix/var/lre/views" */
  readonly viewsDir?: string;
}

/** In-process dedup: concurrent requests for one closure share one build. */
const building = new Map<string, Promise<string>>();

/**
 * Returns the view directory for `closure`, building it if needed. Safe
 * under concurrency: each builder fills a private temp dir and renames it into
 * place; a loser of the race discards its copy and uses the winner's.
 */
export function ensureClosureView(closure: Closure, options: ClosureViewOptions = {}): Promise<string> {
  const viewsDir = options.viewsDir ?? DEFAULT_VIEWS_DIR;
  const finalDir = join(viewsDir, closure.hash);
  const key = finalDir;
  let pending = building.get(key);
  if (!pending) {
    pending = buildOrReuse(closure, viewsDir, finalDir).finally(() => building.delete(key));
    building.set(key, pending);
  }
  return pending;
}

async function buildOrReuse(closure: Closure, viewsDir: string, finalDir: string): Promise<string> {
  if (await touchIfExists(finalDir)) return finalDir;
  await mkdir(viewsDir, { recursive: true, mode: 0o755 });
  const tmpDir = join(viewsDir, `.tmp-${closure.hash}-${process.pid}-${randomBytes(6).toString("hex")}`);
  await mkdir(tmpDir, { mode: 0o755 });
  try {
    for (const storePath of closure.paths) await mirror(storePath, join(tmpDir, basename(storePath)));
    try {
      await rename(tmpDir, finalDir);
    } catch (err) {
      // Another process (or an earlier run) published the same closure first.
      if (!isErrno(err, "ENOTEMPTY") && !isErrno(err, "EEXIST")) throw err;
      await removeTree(tmpDir);
    }
  } catch (err) {
    await removeTree(tmpDir).catch(() => undefined);
    throw err;
  }
  await touchIfExists(finalDir);
  return finalDir;
}

/**
 * Recreates `src` at `dst`: directories made, files and symlinks hardlinked
 * (symlinks recreated when that is refused). Uses synchronous calls (a promise per file costs ~20x more on large
 * closures) but yields to the event loop every few hundred entries so a
 * server stays responsive while a big view is built.
 */
async function mirror(src: string, dst: string): Promise<void> {
  // Depth-first with an explicit stack; directory modes are restored after
  // their contents exist, in reverse creation order.
  const stack: [string, string][] = [[src, dst]];
  const dirModes: [string, number][] = [];
  let sinceYield = 0;
  while (stack.length > 0) {
    const [from, to] = stack.pop() as [string, string];
    const st = lstatSync(from);
    if (st.isSymbolicLink()) {
      // link(2) does not follow symlinks: hardlinking the store's symlink
      // inode is the same symlink, and much cheaper than making a new one.
      try {
        linkSync(from, to);
      } catch (err) {
        if (!isErrno(err, "EXDEV") && !isErrno(err, "EPERM") && !isErrno(err, "EMLINK")) throw err;
        symlinkSync(readlinkSync(from), to);
      }
    } else if (st.isDirectory()) {
      mkdirSync(to, { mode: 0o755 });
      dirModes.push([to, st.mode & 0o7777]);
      for (const entry of readdirSync(from)) stack.push([join(from, entry), join(to, entry)]);
    } else if (st.isFile()) {
      linkOrCopy(from, to, st.mode & 0o7777);
    } else {
      throw new Error(`Cannot mirror "${from}" into a closure view: store paths hold only files, directories and symlinks`);
    }
    if (++sinceYield >= 512) {
      sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  for (let i = dirModes.length - 1; i >= 0; i--) {
    const [dir, mode] = dirModes[i] as [string, number];
    chmodSync(dir, mode);
  }
}

/** Marks a view as recently used (mtime drives LRU collection). */
async function touchIfExists(dir: string): Promise<boolean> {
  try {
    const now = new Date();
    await utimes(dir, now, now);
    return true;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return false;
    throw err;
  }
}

export interface CollectViewsOptions extends ClosureViewOptions {
  /** Keep at most this many views (most recently used first). */
  readonly keep: number;
  /** Closure hashes never collected. Views bound by sandboxes running in this process are always kept. */
  readonly inUse?: ReadonlySet<string>;
  /** Views used more recently than this are kept whatever `keep` says. @default 60000 */
  readonly minIdleMs?: number;
}

/**
 * Deletes least-recently-used views beyond `keep`, plus temp dirs left by
 * crashed builders. A view is first renamed out of the way, so a concurrent
 * ensureClosureView either sees the whole view or none and rebuilds it.
 * Returns the hashes removed.
 */
export async function collectClosureViews(options: CollectViewsOptions): Promise<string[]> {
  const viewsDir = options.viewsDir ?? DEFAULT_VIEWS_DIR;
  const minIdleMs = options.minIdleMs ?? 60_000;
  let names: string[];
  try {
    names = await readdir(viewsDir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
  const now = Date.now();
  const views: { name: string; mtimeMs: number }[] = [];
  for (const name of names) {
    const path = join(viewsDir, name);
    const st = await stat(path).catch(() => undefined);
    if (!st) continue;
    if (name.startsWith(".")) {
      // A temp dir untouched for a while belongs to a builder that died.
      if (now - st.mtimeMs > Math.max(minIdleMs, 10 * 60_000)) await removeTree(path);
      continue;
    }
    views.push({ name, mtimeMs: st.mtimeMs });
  }
  views.sort((a, b) => b.mtimeMs - a.mtimeMs || a.name.localeCompare(b.name));
  const removed: string[] = [];
  for (const view of views.slice(Math.max(0, options.keep))) {
    if (options.inUse?.has(view.name) || isPathHeld(join(viewsDir, view.name)) || now - view.mtimeMs < minIdleMs) continue;
    const trash = join(viewsDir, `.trash-${view.name}-${randomBytes(6).toString("hex")}`);
    try {
      await rename(join(viewsDir, view.name), trash);
    } catch (err) {
      if (isErrno(err, "ENOENT")) continue;
      throw err;
    }
    await removeTree(trash);
    removed.push(view.name);
  }
  return removed;
}
