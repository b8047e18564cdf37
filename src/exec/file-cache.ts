import { chmod, copyFile, lstat, mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey } from "../digest/digest";

/**
 * Blobs materialised as read-only files, `<dir>/<fn>-<hash>[-x]`, so input
 * staging is one hardlink per file instead of one copy. An entry is written
 * once, under a temporary name, then renamed into place; it is never opened
 * for writing again. Because every staged copy of a blob is the same inode,
 * entries are 0444 (0555 when executable) and the executor checks after each
 * run that none was changed in place (see `changedSince`).
 */
export class FileCache {
  private readonly inFlight = new Map<string, Promise<string>>();
  private ready: Promise<void> | undefined;
  private seq = 0;

  constructor(
    readonly dir: string,
    private readonly cas: BlobStore,
  ) {}

  pathOf(digest: Digest, executable: boolean): string {
    return join(this.dir, `${digest.fn}-${digest.hash}${executable ? "-x" : ""}`);
  }

  /** The cache file for a blob, creating it from the CAS when absent. */
  async materialize(digest: Digest, executable: boolean): Promise<string> {
    const path = this.pathOf(digest, executable);
    if (await exists(path)) return path;
    const key = `${digestKey(digest)}:${executable}`;
    let p = this.inFlight.get(key);
    if (p === undefined) {
      p = this.write(digest, executable, path).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, p);
    }
    return p;
  }

  /** Drops an entry that an action modified, so no later action sees the damage. */
  async evict(digest: Digest, executable: boolean): Promise<void> {
    await rm(this.pathOf(digest, executable), { force: true });
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
      // Rename is atomic: a concurrent writer of the same blob in another
      // process just replaces identical bytes.
      await rename(tmp, path);
      return path;
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
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

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
