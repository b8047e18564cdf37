/**
 * The closure of declared store paths, read straight from Nix's own SQLite
 * database (ValidPaths + Refs). No nix CLI at run time: spawning nix-store per
 * action would cost more than the sandbox itself, and the database is the
 * source of truth nix-store would read anyway.
 */
import { Database } from "bun:sqlite";
import { statSync } from "node:fs";
import type { Closure } from "./spec";

export const DEFAULT_STORE_DIR = "/nix/store";
export const DEFAULT_NIX_DB = "/nix/var/nix/db/db.sqlite";

/** Nix's base32 alphabet: digits and lower-case letters without e, o, u, t. */
const HASH_PART = "[0-9a-df-np-sv-z]{32}";
/** Characters Nix allows in store path names. */
const NAME_PART = "[A-Za-z0-9+\\-._?=]+";

/** A declared root names a store path that Nix does not know as valid. */
export class UnknownStorePathError extends Error {
  override readonly name = "UnknownStorePathError";
  constructor(readonly path: string, readonly root: string = path) {
    super(
      `Store path "${path}"${root !== path ? ` (from "${root}")` : ""} is not valid in the Nix store: ` +
        `build or fetch it first (e.g. \`nix-store --realise ${path}\` or \`nix-build\`), then retry`,
    );
  }
}

/** A declared root is not under the store directory at all. */
export class NotAStorePathError extends Error {
  override readonly name = "NotAStorePathError";
  constructor(readonly path: string, storeDir: string) {
    super(`Path "${path}" is not a Nix store path: expected "${storeDir}/<32-character hash>-<name>[/...]"`);
  }
}

export interface ClosureResolverOptions {
  /** @default "/nix/var/nix/db/db.sqlite" */
  readonly dbPath?: string;
  /** @default "/nix/store" */
  readonly storeDir?: string;
}

/**
 * Resolves roots to their transitive closure. One read-only connection is
 * kept; in WAL mode every new read transaction sees paths committed since, so
 * paths built after start are found without reopening. The connection is
 * reopened only when the database file itself is replaced (a store that was
 * wiped and re-created, or did not exist yet when the resolver was made).
 */
export class ClosureResolver {
  readonly dbPath: string;
  readonly storeDir: string;
  #db: Database | undefined;
  #identity = "";
  /**
   * Closures already walked, by their store roots. Valid only while Nix's
   * database is unchanged: `PRAGMA data_version` moves whenever another
   * connection commits, so any registration or deletion empties it. Saves
   * the recursive query on every action (≈ 0.3 ms for 100 paths, 2 ms for 1,000).
   */
  readonly #memo = new Map<string, Closure>();
  #dataVersion = -1;

  /** A string is shorthand for `{ dbPath }`. */
  constructor(options: ClosureResolverOptions | string = {}) {
    if (typeof options === "string") options = { dbPath: options };
    this.dbPath = options.dbPath ?? DEFAULT_NIX_DB;
    this.storeDir = (options.storeDir ?? DEFAULT_STORE_DIR).replace(/\/+$/, "");
  }

  /** The store path containing `path` (which may point inside it). */
  toStorePath(path: string): string {
    const storePath = parseStorePath(path, this.storeDir);
    if (storePath === undefined) throw new NotAStorePathError(path, this.storeDir);
    return storePath;
  }

  /**
   * Transitive closure of `roots`: sorted, deduplicated, with a stable hash.
   * Throws UnknownStorePathError for the first root Nix does not know.
   */
  resolve(roots: readonly string[]): Closure {
    const storeRoots = new Map<string, string>();
    for (const root of roots) storeRoots.set(this.toStorePath(root), root);
    const db = this.#open();
    const version = db.query<{ data_version: number }, []>("PRAGMA data_version").get()?.data_version ?? -1;
    if (version !== this.#dataVersion) {
      this.#memo.clear();
      this.#dataVersion = version;
    }
    const memoKey = [...storeRoots.keys()].sort().join("\n");
    const memoized = this.#memo.get(memoKey);
    if (memoized) return memoized;
    const known = db.query<{ path: string }, [string]>("SELECT path FROM ValidPaths WHERE path = ?");
    const closureQuery = db.query<{ path: string }, [string]>(
      `WITH RECURSIVE closure(id) AS (
         SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))
         UNION
         SELECT Refs.reference FROM Refs JOIN closure ON Refs.referrer = closure.id
       )
       SELECT path FROM ValidPaths WHERE id IN (SELECT id FROM closure)`,
    );
    // One read transaction, so the check and the walk see the same snapshot.
    const paths = db.transaction(() => {
      for (const [storePath, root] of storeRoots) {
        if (!known.get(storePath)) throw new UnknownStorePathError(storePath, root);
      }
      return closureQuery.all(JSON.stringify([...storeRoots.keys()])).map((row) => row.path);
    })();
    const closure = makeClosure(paths);
    if (this.#memo.size >= 1024) this.#memo.clear();
    this.#memo.set(memoKey, closure);
    return closure;
  }

  close(): void {
    this.#db?.close();
    this.#db = undefined;
    this.#identity = "";
    this.#memo.clear();
    this.#dataVersion = -1;
  }

  #open(): Database {
    let identity: string;
    try {
      const st = statSync(this.dbPath);
      identity = `${st.dev}:${st.ino}`;
    } catch (err) {
      throw new Error(`Cannot read the Nix database "${this.dbPath}": ${String(err)}; is Nix installed and has anything been added to the store?`);
    }
    if (this.#db && identity === this.#identity) return this.#db;
    this.#db?.close();
    this.#memo.clear();
    this.#dataVersion = -1;
    this.#db = new Database(this.dbPath, { readonly: true });
    // Nix may hold a write lock briefly while registering paths.
    this.#db.exec("PRAGMA busy_timeout = 5000");
    this.#identity = identity;
    return this.#db;
  }
}

/** Builds a Closure value from any list of store paths (sorted, deduplicated, hashed). */
export function makeClosure(paths: Iterable<string>): Closure {
  const sorted = [...new Set(paths)].sort();
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(sorted.join("\n"));
  return { paths: sorted, hash: hasher.digest("hex") };
}

/**
 * The store path containing `path` (which may point inside it), or undefined
 * when `path` does not have the shape of one: `<storeDir>/<32-character
 * hash>-<name>` followed by nothing or `/…`. Checks the shape only; whether
 * Nix knows the path is for ClosureResolver.resolve to say.
 */
export function parseStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): string | undefined {
  let re = anchoredStorePathRes.get(storeDir);
  if (re === undefined) {
    re = new RegExp(`^${storePathPattern(storeDir)}`);
    anchoredStorePathRes.set(storeDir, re);
  }
  const match = re.exec(path);
  if (!match) return undefined;
  const rest = path.slice(match[0].length);
  return rest === "" || rest.startsWith("/") ? match[0] : undefined;
}

/** Compiled once per store dir: parseStorePath runs for every root of every action. */
const anchoredStorePathRes = new Map<string, RegExp>();

/** `<storeDir>/<hash>-<name>` as a regular expression source, unanchored. */
function storePathPattern(storeDir: string): string {
  return `${escapeRegExp(storeDir.replace(/\/+$/, ""))}/${HASH_PART}-${NAME_PART}`;
}

/**
 * Store paths mentioned anywhere in `text` (argv entries, env values), in
 * order of first appearance, without duplicates. A reference to a file inside
 * a store path yields the store path itself.
 */
export function findStorePathRefs(text: string, storeDir: string = DEFAULT_STORE_DIR): string[] {
  const re = new RegExp(storePathPattern(storeDir), "g");
  const seen = new Set<string>();
  for (const match of text.matchAll(re)) seen.add(match[0]);
  return [...seen];
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
