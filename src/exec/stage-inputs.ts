import { chmodSync, copyFileSync, linkSync, lstatSync, mkdirSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey, isEmptyDigest } from "../digest/digest";
import { RpcError } from "../errors";
import type { Command } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { FileCache } from "./file-cache";
import type { InputTree } from "./input-tree";
import { relativeSegments } from "./paths";

/** A file-cache entry an action saw, with what it looked like before the run. */
export interface SharedInput {
  readonly digest: Digest;
  readonly executable: boolean;
  readonly cachePath: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly mode: number;
}

export interface StagedInputs {
  readonly root: string;
  /** Hardlinked cache entries; checked after the run for in-place modification. */
  readonly shared: readonly SharedInput[];
}

/**
 * The directories lre must create besides the input tree: the working
 * directory and the parents of every output path, all relative to the input
 * root. Checked before anything is staged; none may pass through an input
 * file or symlink, since creating them would otherwise follow the link.
 */
export function extraDirectories(command: Command, tree: InputTree): string[] {
  const wd = relativeSegments(command.workingDirectory, "Command.working_directory", true);
  const blocked = new Set<string>([...tree.files.map((f) => f.path), ...tree.symlinks.map((s) => s.path)]);
  const dirs = new Set<string>();
  const add = (segments: readonly string[], what: string): void => {
    for (let i = 1; i <= segments.length; i++) {
      const prefix = segments.slice(0, i).join("/");
      if (blocked.has(prefix)) {
        throw RpcError.invalidArgument(
          `${what} passes through "${prefix}", which is an input file or symlink, not a directory`,
        );
      }
    }
    if (segments.length > 0) dirs.add(segments.join("/"));
  };
  add(wd, "Command.working_directory");
  for (const [list, field] of [
    [command.outputPaths, "output_paths"],
    [command.outputFiles, "output_files"],
    [command.outputDirectories, "output_directories"],
  ] as const) {
    for (const p of list) {
      const segments = [...wd, ...relativeSegments(p, `Command.${field} entry`)];
      add(segments.slice(0, -1), `Command.${field} entry "${p}"`);
    }
  }
  return [...dirs].sort();
}

/**
 * Materialises a validated input tree under `root` (which must not exist):
 * directories created parents first, files hardlinked from the read-only file
 * cache (copied only when a link is impossible), symlinks as symlinks. The
 * staged blobs are touched so eviction spares inputs of running actions.
 */
export async function stageInputs(
  tree: InputTree,
  root: string,
  extraDirs: readonly string[],
  cache: FileCache,
  cas: BlobStore,
  concurrency = 32,
): Promise<StagedInputs> {
  // The filesystem work is done with synchronous calls in batches of
  // SYNC_BATCH, yielding to the event loop between batches: a promise per
  // link or stat costs a thread-pool round trip each (1,000 inputs: ≈ 30 ms
  // async against ≈ 13 ms sync), while a batch blocks other actions for
  // well under a millisecond or two.
  mkdirSync(root, { recursive: true });
  await inBatches(tree.directories, (d) => mkdirSync(join(root, d)));

  const entries = new Map<string, { digest: Digest; executable: boolean }>();
  for (const f of tree.files) entries.set(`${digestKey(f.digest)}:${f.executable}`, f);
  const shared = new Map<string, SharedInput>();
  // Cache entries already present cost one lstat; only absent ones go
  // through materialize (a CAS read and a file write), concurrently.
  const absent: [string, { digest: Digest; executable: boolean }][] = [];
  await inBatches([...entries], ([key, e]) => {
    const cachePath = cache.pathOf(e.digest, e.executable);
    const st = lstatSync(cachePath, { throwIfNoEntry: false });
    if (st === undefined) absent.push([key, e]);
    else shared.set(key, { digest: e.digest, executable: e.executable, cachePath, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode });
  });
  await parallel(absent, concurrency, async ([key, { digest, executable }]) => {
    const cachePath = await cache.materialize(digest, executable);
    const st = statSync(cachePath);
    shared.set(key, { digest, executable, cachePath, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode });
  });

  await inBatches(tree.files, (f) => {
    const entry = shared.get(`${digestKey(f.digest)}:${f.executable}`)!;
    linkOrCopy(entry.cachePath, join(root, f.path), f.executable);
  });
  for (const s of tree.symlinks) symlinkSync(s.target, join(root, s.path));
  for (const d of extraDirs) mkdirSync(join(root, d), { recursive: true });

  const used = tree.fileDigests.filter((d) => !isEmptyDigest(d));
  if (used.length > 0) await cas.touch(used);
  return { root, shared: [...shared.values()] };
}

/**
 * Cache entries whose mode, size or mtime changed since staging: an action
 * that chmods a shared input and writes to it would otherwise corrupt every
 * later action using that blob. A stat per entry is cheap; re-hashing is not.
 */
export async function modifiedSharedInputs(staged: StagedInputs): Promise<SharedInput[]> {
  const changed: SharedInput[] = [];
  await inBatches(staged.shared, (s) => {
    const st = lstatSync(s.cachePath, { throwIfNoEntry: false });
    if (st === undefined || st.size !== s.size || st.mtimeMs !== s.mtimeMs || st.mode !== s.mode) changed.push(s);
  });
  return changed;
}

/** Synchronous filesystem calls per batch before yielding to the event loop. */
const SYNC_BATCH = 256;

/** Runs a synchronous `fn` over `items`, yielding to the event loop every SYNC_BATCH items. */
async function inBatches<T>(items: readonly T[], fn: (item: T) => void): Promise<void> {
  for (let i = 0; i < items.length; i++) {
    if (i > 0 && i % SYNC_BATCH === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    fn(items[i]!);
  }
}

function linkOrCopy(source: string, dest: string, executable: boolean): void {
  try {
    linkSync(source, dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EMLINK: the inode hit the filesystem's link limit (65,000 on ext4);
    // EXDEV: the cache and the exec dir ended up on different filesystems.
    if (code !== "EMLINK" && code !== "EXDEV") throw err;
    copyFileSync(source, dest);
    chmodSync(dest, executable ? 0o555 : 0o444);
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function parallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
