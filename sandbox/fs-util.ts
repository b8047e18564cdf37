/**
 * Filesystem helpers shared by the closure-view builder and lre's executor
 * (which imports them from here, since this library imports nothing from src/).
 */
import { chmodSync, constants as fsc, copyFileSync, linkSync } from "node:fs";
import { chmod, lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * Hardlinks `from` at `to`, copying (then setting `mode`) only when a link is
 * refused: EXDEV (another filesystem), EPERM (fs.protected_hardlinks refuses
 * links to files a non-root caller does not own), EMLINK (the inode's link
 * count is exhausted, 65,000 on ext4). A copy is slower but equivalent.
 */
export function linkOrCopy(from: string, to: string, mode: number): void {
  try {
    linkSync(from, to);
  } catch (err) {
    if (!isErrno(err, "EXDEV") && !isErrno(err, "EPERM") && !isErrno(err, "EMLINK")) throw err;
    copyFileSync(from, to, fsc.COPYFILE_FICLONE);
    chmodSync(to, mode);
  }
}

/**
 * rm -rf that also works for a non-root owner of read-only (0555)
 * directories, which stop rm from deleting inside them. Never follows
 * symlinks: only what lstat calls a directory is descended into.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch {
    // fall through: make every directory writable, then retry
  }
  const fix = async (d: string): Promise<void> => {
    await chmod(d, 0o700).catch(() => undefined);
    for (const e of await readdir(d).catch(() => [] as string[])) {
      const p = join(d, e);
      const st = await lstat(p).catch(() => undefined);
      if (st?.isDirectory()) await fix(p);
    }
  };
  const st = await lstat(path).catch(() => undefined);
  if (st?.isDirectory()) await fix(path);
  await rm(path, { recursive: true, force: true });
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
