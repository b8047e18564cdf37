import type { Stats } from "node:fs";
import { lstatSync } from "node:fs";
import { chmod, chown, copyFile, lstat, mkdir, open, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey } from "../digest/digest";
import { createHasher } from "../digest/hasher";
import { GrpcCode, isRpcError } from "../errors";

/**
 * Owner given to cache entries when lre runs as root: "nobody", a uid that
 * is not mapped into any sandbox's user namespace (bubblewrap maps only the
 * caller's own uid). An action, which has no capabilities, can then neither
 * chmod nor write the shared inode it sees through its hardlinks.
 */
export const DEFAULT_ROOT_ENTRY_OWNER = 65534;

/** What an entry looked like when lre last vouched for it. */
interface Signature {
  readonly ino: number;
  readonly size: number;
  readonly mode: number;
  readonly uid: number;
  readonly nlink: number;
  readonly mtimeMs: number;
  /** User space can set mtime back but never ctime; any chmod, write or link moves it. */
  readonly ctimeMs: number;
}

function signatureOf(st: Stats): Signature {
  return { ino: st.ino, size: st.size, mode: st.mode, uid: st.uid, nlink: st.nlink, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

/**
 * `linkSensitive`: also compare link count and ctime, which every link and
 * unlink moves. Needed only where an action could change an entry (entries
 * owned by lre's own uid); see FileCache.
 */
function sameSignature(a: Signature, st: Stats, linkSensitive: boolean): boolean {
  return (
    a.ino === st.ino &&
    a.size === st.size &&
    a.mode === st.mode &&
    a.uid === st.uid &&
    a.mtimeMs === st.mtimeMs &&
    (!linkSensitive || (a.nlink === st.nlink && a.ctimeMs === st.ctimeMs))
  );
}

/** One running action's claim on cache entries; told when an entry it uses was found modified. */
export class CacheLease {
  /** Digests of entries this action used that some action modified in place. */
  readonly modified: Digest[] = [];
  readonly paths = new Set<string>();
}

export interface FileCacheOptions {
  /** Owner uid of entries; undefined leaves them owned by lre. @default 65534 as root, else undefined */
  readonly entryOwner?: number | undefined;
}

/**
 * Blobs materialised as read-only files, `<dir>/<fn>-<hash>[-x]`, so input
 * staging is one hardlink per file instead of one copy. An entry is written
 * once, under a temporary name, then renamed into place.
 *
 * Every staged copy of a blob is the same inode, so an action that changed
 * one would change it for every action using it. Two defences:
 *  - as root, entries belong to a uid the sandbox does not map (see
 *    DEFAULT_ROOT_ENTRY_OWNER), so an action cannot change them at all;
 *  - always, lre remembers each entry's stat signature. An entry whose
 *    signature changed behind lre's back is re-hashed before anyone relies
 *    on it; if its bytes or mode are wrong, it is evicted and every running
 *    action holding it is told (CacheLease), so none of their results is
 *    cached. Where actions can write entries (no entryOwner: lre is not
 *    root), the signature includes ctime, which user space cannot reset, and
 *    the link count, so lre renews it around its own links and unlinks
 *    (`explained`, `ifVouched`). Where they cannot (entryOwner), links and
 *    unlinks are harmless and left out of the signature: staging is then one
 *    lstat and one link per input, and teardown a plain rm -rf.
 */
export class FileCache {
  private readonly inFlight = new Map<string, Promise<string>>();
  private readonly verifying = new Map<string, Promise<boolean>>();
  /** Signatures lre vouches for, by entry path; an entry without one is re-hashed before use. */
  private readonly known = new Map<string, Signature>();
  private readonly holders = new Map<string, Set<CacheLease>>();
  /** Last staging of each entry (this process), for LRU pruning. */
  private readonly lastUse = new Map<string, number>();
  private ready: Promise<void> | undefined;
  private seq = 0;
  readonly entryOwner: number | undefined;

  constructor(
    readonly dir: string,
    private readonly cas: BlobStore,
    options: FileCacheOptions = {},
  ) {
    this.entryOwner = "entryOwner" in options ? options.entryOwner : process.getuid?.() === 0 ? DEFAULT_ROOT_ENTRY_OWNER : undefined;
    this.linkSensitive = this.entryOwner === undefined;
  }

  /** True when lre's own links and unlinks of entries must be explained (see the class comment). */
  readonly linkSensitive: boolean;

  pathOf(digest: Digest, executable: boolean): string {
    return join(this.dir, `${digest.fn}-${digest.hash}${executable ? "-x" : ""}`);
  }

  /** Marks an entry as used by `lease` until released: pruning spares it, modification reaches it. */
  hold(lease: CacheLease, path: string): void {
    if (lease.paths.has(path)) return;
    lease.paths.add(path);
    let set = this.holders.get(path);
    if (set === undefined) this.holders.set(path, (set = new Set()));
    set.add(lease);
    this.lastUse.set(path, Date.now());
  }

  release(lease: CacheLease): void {
    for (const path of lease.paths) {
      const set = this.holders.get(path);
      set?.delete(lease);
      if (set?.size === 0) this.holders.delete(path);
    }
    lease.paths.clear();
  }

  isHeld(path: string): boolean {
    return this.holders.has(path);
  }

  /**
   * A verified cache file for a blob, held by `lease`: created from the CAS
   * when absent, re-hashed when lre cannot vouch for its current stat, and
   * replaced when it turns out modified.
   */
  async acquire(lease: CacheLease, digest: Digest, executable: boolean): Promise<string> {
    const path = this.pathOf(digest, executable);
    this.hold(lease, path);
    for (let attempt = 0; attempt < 3; attempt++) {
      const st = lstatSync(path, { throwIfNoEntry: false });
      if (st === undefined) return this.materialize(digest, executable);
      if (this.vouchedFor(path, st)) return path;
      if (await this.verify(path, digest, executable, lease)) return path;
    }
    return this.materialize(digest, executable);
  }

  /** True when lre knows `st` to be the entry as it last wrote or verified it. */
  vouchedFor(path: string, st: Stats): boolean {
    const sig = this.known.get(path);
    return sig !== undefined && sameSignature(sig, st, this.linkSensitive);
  }

  /**
   * Runs lre's own link/unlink of an entry (which moves its ctime and link
   * count) so that the change stays explained: the signature is renewed only
   * when the entry was vouched for just before, so a modification made
   * earlier is never laundered by it.
   */
  explained(path: string, op: () => void): void {
    if (!this.linkSensitive) return op();
    const before = lstatSync(path, { throwIfNoEntry: false });
    const trusted = before !== undefined && this.vouchedFor(path, before);
    op();
    if (!trusted) return;
    const after = lstatSync(path, { throwIfNoEntry: false });
    if (after !== undefined) this.known.set(path, signatureOf(after));
  }

  /**
   * Like `explained`, but runs `op` only when the entry is vouched for right
   * before it; returns false (and does nothing) otherwise, so the caller can
   * acquire the entry first. Staging uses it to check and link in one pass:
   * two lstats and a link per input in the steady state.
   */
  ifVouched(path: string, op: () => void): boolean {
    const before = lstatSync(path, { throwIfNoEntry: false });
    if (before === undefined || !this.vouchedFor(path, before)) return false;
    op();
    if (!this.linkSensitive) return true;
    const after = lstatSync(path, { throwIfNoEntry: false });
    if (after !== undefined) this.known.set(path, signatureOf(after));
    return true;
  }

  /**
   * Checks entries after an action ran. Unexplained stat changes are re-hashed;
   * a modified entry is evicted and every lease holding it learns of it.
   */
  async checkAfterRun(entries: readonly { path: string; digest: Digest; executable: boolean }[]): Promise<void> {
    for (const e of entries) {
      const st = lstatSync(e.path, { throwIfNoEntry: false });
      // Gone: evicted by a detection that already reached this lease, or pruned after release.
      if (st === undefined || this.vouchedFor(e.path, st)) continue;
      await this.verify(e.path, e.digest, e.executable, undefined);
    }
  }

  /**
   * Re-hashes an entry. Returns true when its bytes, mode and owner are right
   * (its signature is then vouched for); otherwise evicts it, tells every
   * holder except `self`, and returns false.
   */
  private verify(path: string, digest: Digest, executable: boolean, self: CacheLease | undefined): Promise<boolean> {
    let p = this.verifying.get(path);
    if (p === undefined) {
      p = this.rehash(path, digest, executable).finally(() => this.verifying.delete(path));
      this.verifying.set(path, p);
    }
    return p.then(async (ok) => {
      if (ok) return true;
      this.known.delete(path);
      for (const lease of this.holders.get(path) ?? []) {
        if (lease !== self && !lease.modified.some((d) => d.hash === digest.hash)) lease.modified.push(digest);
      }
      await rm(path, { force: true });
      return false;
    });
  }

  private async rehash(path: string, digest: Digest, executable: boolean): Promise<boolean> {
    let before: Stats;
    try {
      before = await lstat(path);
    } catch {
      return false;
    }
    const wantMode = executable ? 0o555 : 0o444;
    if (!before.isFile() || (before.mode & 0o7777) !== wantMode || before.size !== digest.sizeBytes) return false;
    if (this.entryOwner !== undefined && before.uid !== this.entryOwner) return false;
    const hasher = createHasher(digest.fn);
    const fh = await open(path, "r");
    try {
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        hasher.update(buf.subarray(0, bytesRead));
      }
    } finally {
      await fh.close();
    }
    if (hasher.hex() !== digest.hash) return false;
    // The signature from before hashing: a change made while hashing stays unexplained.
    this.known.set(path, signatureOf(before));
    return true;
  }

  /** The cache file for a blob, creating it from the CAS when absent. */
  async materialize(digest: Digest, executable: boolean): Promise<string> {
    const path = this.pathOf(digest, executable);
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st !== undefined && this.vouchedFor(path, st)) return path;
    const key = `${digestKey(digest)}:${executable}`;
    let p = this.inFlight.get(key);
    if (p === undefined) {
      p = this.write(digest, executable, path).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, p);
    }
    return p;
  }

  /** Drops an entry, e.g. one an action modified, so no later action sees the damage. */
  async evict(digest: Digest, executable: boolean): Promise<void> {
    const path = this.pathOf(digest, executable);
    this.known.delete(path);
    await rm(path, { force: true });
  }

  /**
   * Removes temporary files left by a process that died mid-write. Call only
   * at startup, while no write of this process is under way.
   */
  async removeStaleTemps(): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (!name.startsWith(".tmp-")) continue;
      await rm(join(this.dir, name), { force: true });
      removed++;
    }
    return removed;
  }

  /**
   * Deletes least recently used entries until the cache holds at most
   * `maxBytes`, never one held by a running action. Entries this process has
   * not used yet count as oldest, in ctime order. Returns bytes freed.
   */
  async prune(maxBytes: number): Promise<number> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const entries: { path: string; size: number; used: number }[] = [];
    let total = 0;
    for (const name of names) {
      if (name.startsWith(".")) continue;
      const path = join(this.dir, name);
      const st = await lstat(path).catch(() => undefined);
      if (st === undefined || !st.isFile()) continue;
      total += st.size;
      entries.push({ path, size: st.size, used: this.lastUse.get(path) ?? st.ctimeMs - 1e15 });
    }
    if (total <= maxBytes) return 0;
    entries.sort((a, b) => a.used - b.used);
    let freed = 0;
    for (const e of entries) {
      if (total - freed <= maxBytes) break;
      // Checked right before the unlink (no await between): a stager holds an entry before it looks at it.
      if (this.isHeld(e.path)) continue;
      this.known.delete(e.path);
      this.lastUse.delete(e.path);
      await rm(e.path, { force: true });
      freed += e.size;
    }
    return freed;
  }

  private async write(digest: Digest, executable: boolean, path: string): Promise<string> {
    this.ready ??= mkdir(this.dir, { recursive: true }).then(() => undefined);
    await this.ready;
    const tmp = join(this.dir, `.tmp-${process.pid}-${++this.seq}-${digest.hash.slice(0, 16)}`);
    try {
      const source = this.cas.filePath ? await this.cas.filePath(digest) : undefined;
      if (source !== undefined) {
        // A copy, not a link: the store's own file must keep its own mode and
        // must never become reachable from inside a sandbox.
        await copyFile(source, tmp);
      } else if (digest.sizeBytes <= 4 * 1024 * 1024) {
        await writeAll(tmp, [await this.cas.get(digest)]);
      } else {
        await writeAll(tmp, await this.cas.read(digest));
      }
      await chmod(tmp, executable ? 0o555 : 0o444);
      if (this.entryOwner !== undefined) await chown(tmp, this.entryOwner, this.entryOwner);
      // Rename is atomic: a concurrent writer of the same blob in another
      // process just replaces identical bytes.
      await rename(tmp, path);
      this.known.set(path, signatureOf(await lstat(path)));
      return path;
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

/** The blob vanished from the CAS (evicted or repaired) between prepare and staging. */
export function isBlobGone(err: unknown): boolean {
  return isRpcError(err, GrpcCode.NOT_FOUND) || (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

async function writeAll(path: string, chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<void> {
  const fh = await open(path, "wx", 0o600);
  try {
    for await (const chunk of chunks) {
      let off = 0;
      while (off < chunk.byteLength) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off);
        off += bytesWritten;
      }
    }
  } finally {
    await fh.close();
  }
}
