import { statfsSync } from "node:fs";
import { homedir } from "node:os";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";

/** Where defaults come from, so tests can ask for them without touching the real home. */
export interface Environment {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly home: string;
}

export function processEnvironment(): Environment {
  return { env: process.env, home: process.env.HOME ?? homedir() };
}

export function defaultDataDir(e: Environment): string {
  return join(e.home, ".cache", "lre");
}

/**
 * $XDG_RUNTIME_DIR is per-user, 0700 and cleared at logout, the right home for
 * a socket; without it the socket sits beside the data.
 */
export function defaultSocketPath(e: Environment): string {
  const runtime = e.env.XDG_RUNTIME_DIR;
  if (runtime !== undefined && runtime !== "") return join(runtime, "lre", "lre.sock");
  return join(e.home, ".cache", "lre", "lre.sock");
}

export function defaultJobs(): number {
  return Math.max(1, availableParallelism());
}

export const DEFAULT_GRACE_SECONDS = 10;
export const DEFAULT_ACTION_TIMEOUT_SECONDS = 900;
export const MAX_ACTION_TIMEOUT_SECONDS = 3600 * 4;

/** Cache limits when --max-cache-size is not given: a quarter of the free space, capped. */
export const DEFAULT_CACHE_FREE_FRACTION = 0.25;
export const DEFAULT_CACHE_CAP_BYTES = 50 * 1024 ** 3;
/** Floor, so a nearly full disk still gives a cache that can hold a build's outputs. */
export const DEFAULT_CACHE_FLOOR_BYTES = 1024 ** 3;

/** Free bytes on the filesystem that holds `path` (or would, once created). */
export function freeBytesAt(path: string): number {
  const s = statfsSync(nearestExisting(path));
  return Number(s.bavail) * Number(s.bsize);
}

export function defaultMaxCacheBytes(dataDir: string): number {
  const quarter = Math.floor(freeBytesAt(dataDir) * DEFAULT_CACHE_FREE_FRACTION);
  return Math.max(DEFAULT_CACHE_FLOOR_BYTES, Math.min(quarter, DEFAULT_CACHE_CAP_BYTES));
}

/** The path itself or its closest ancestor that exists. */
export function nearestExisting(path: string): string {
  let p = path;
  for (;;) {
    try {
      statfsSync(p);
      return p;
    } catch {
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}
