import { constants } from "node:fs";
import { lstat, open, readdir, readlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { BlobStore } from "../cas/blob-store";
import type { Digest, DigestFn } from "../digest/digest";
import { toWire } from "../digest/digest";
import { createHasher, digestOf } from "../digest/hasher";
import { RpcError } from "../errors";
import {
  Directory,
  Tree,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type {
  ActionResult,
  Command,
  DirectoryNode,
  FileNode,
  OutputDirectory,
  OutputFile,
  OutputSymlink,
  SymlinkNode,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { compareNames, relativeSegments } from "./paths";

/**
 * Phase three of an action: turn what it left in its root into an
 * ActionResult. The walk uses lstat and O_NOFOLLOW throughout, so a symlink is
 * always recorded as a symlink and never followed: an action cannot make lre
 * read host files (e.g. a link to /etc/shadow) into the CAS.
 */

export interface OutputLimits {
  /** Total bytes of output files, stdout and stderr together. */
  readonly maxOutputBytes: number;
  /** Largest stream or file returned inline when the client asks. */
  readonly maxInlineBytes: number;
  /** Files, directories and symlinks inside all output directories. */
  readonly maxTreeNodes: number;
  readonly maxTreeDepth: number;
}

export const DEFAULT_OUTPUT_LIMITS: OutputLimits = {
  maxOutputBytes: 16 * 1024 * 1024 * 1024,
  maxInlineBytes: 1024 * 1024,
  maxTreeNodes: 1_000_000,
  maxTreeDepth: 256,
};

export type OutputKind = "file" | "directory" | "any";

export interface DeclaredOutput {
  /** Relative to the working directory, as the client wrote it. */
  readonly path: string;
  readonly kind: OutputKind;
}

/**
 * Every output the Command declares. `output_paths` (API 2.1) and the legacy
 * lists are merged: Bazel 6.3-7 sends both forms and Buck2's compatibility
 * mode puts one path in both legacy lists; a path declared twice becomes "any".
 */
export function declaredOutputs(command: Command): DeclaredOutput[] {
  const kinds = new Map<string, OutputKind>();
  const add = (path: string, kind: OutputKind, field: string): void => {
    relativeSegments(path, `Command.${field} entry`);
    const prev = kinds.get(path);
    kinds.set(path, prev === undefined || prev === kind ? kind : "any");
  };
  for (const p of command.outputFiles) add(p, "file", "output_files");
  for (const p of command.outputDirectories) add(p, "directory", "output_directories");
  for (const p of command.outputPaths) if (!kinds.has(p)) add(p, "any", "output_paths");
  return [...kinds].sort(([a], [b]) => compareNames(a, b)).map(([path, kind]) => ({ path, kind }));
}

export type CollectedOutputs = Pick<
  ActionResult,
  "outputFiles" | "outputDirectories" | "outputSymlinks" | "outputFileSymlinks" | "outputDirectorySymlinks"
>;

export interface CollectRequest {
  /** Host path of the action's input root. */
  readonly root: string;
  /** Working directory relative to the root. */
  readonly workingDirectory: string;
  readonly outputs: readonly DeclaredOutput[];
  readonly fn: DigestFn;
  /** Output paths whose contents the client wants inline. */
  readonly inlineOutputFiles: readonly string[];
  /** Shared with the response's other inlined bytes. @default MAX_INLINE_RESPONSE_BYTES for this call alone */
  readonly inlineBudget?: InlineBudget;
  /** Where `root` appears inside the sandbox, so absolute symlink targets can be classified within it. */
  readonly sandboxRoot?: string;
}

/**
 * Total bytes inlined into one ExecuteResponse (stdout, stderr and output
 * files together). Inlining is a hint servers may decline; without a total
 * cap, ten 1 MiB files would make a reply clients with the default 4 MiB
 * message limit cannot read. Same value as GetActionResult's cap.
 */
export const MAX_INLINE_RESPONSE_BYTES = 1024 * 1024;

/** Bytes still allowed inline in one response; first come, first served. */
export class InlineBudget {
  constructor(private left: number) {}
  take(bytes: number): boolean {
    if (bytes > this.left) return false;
    this.left -= bytes;
    return true;
  }
}

/** Counts bytes against the output cap, failing with a message that names the culprit. */
export class OutputBudget {
  private used = 0;
  constructor(private readonly limit: number) {}
  take(bytes: number, what: string): void {
    this.used += bytes;
    if (this.used > this.limit) {
      throw RpcError.resourceExhausted(
        `the action's outputs exceed lre's limit of ${this.limit} bytes (reached while collecting ${what}); write less or raise the server's output limit`,
      );
    }
  }
}

export async function collectOutputs(
  cas: BlobStore,
  req: CollectRequest,
  budget: OutputBudget,
  limits: OutputLimits = DEFAULT_OUTPUT_LIMITS,
): Promise<CollectedOutputs> {
  const out: CollectedOutputs = {
    outputFiles: [],
    outputDirectories: [],
    outputSymlinks: [],
    outputFileSymlinks: [],
    outputDirectorySymlinks: [],
  };
  const wd = relativeSegments(req.workingDirectory, "Command.working_directory", true);
  const inline = new Set(req.inlineOutputFiles);
  const inlineBudget = req.inlineBudget ?? new InlineBudget(Math.min(MAX_INLINE_RESPONSE_BYTES, limits.maxInlineBytes));
  const nodes = { count: 0 };
  for (const { path, kind } of req.outputs) {
    const segments = [...wd, ...relativeSegments(path, "output path")];
    const host = await hostPathWithoutLinks(req.root, segments);
    if (host === undefined) continue;
    let st;
    try {
      st = await lstat(host);
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    if (st.isSymbolicLink()) {
      const target = await readlink(host);
      const link: OutputSymlink = { path, target, nodeProperties: undefined };
      out.outputSymlinks.push(link);
      const asDir = kind === "directory" || (kind === "any" && (await pointsToDirectoryInside(req.root, segments, req.sandboxRoot)));
      (asDir ? out.outputDirectorySymlinks : out.outputFileSymlinks).push(link);
    } else if (kind === "directory" && !st.isDirectory()) {
      throw wrongKind(path, "output_directories", st.isFile() ? "a regular file" : "not a directory");
    } else if (kind === "file" && st.isDirectory()) {
      throw wrongKind(path, "output_files", "a directory");
    } else if (st.isFile()) {
      const f = await uploadFile(cas, req.fn, host, budget, `output file "${path}"`, inline.has(path) ? limits.maxInlineBytes : 0);
      const wantInline = inline.has(path) && f.bytes !== undefined && f.bytes.byteLength <= limits.maxInlineBytes && inlineBudget.take(f.bytes.byteLength);
      const file: OutputFile = {
        path,
        digest: toWire(f.digest),
        isExecutable: f.executable,
        contents: wantInline ? Buffer.from(f.bytes!) : Buffer.alloc(0),
        nodeProperties: undefined,
      };
      out.outputFiles.push(file);
    } else if (st.isDirectory()) {
      const tree = await buildTree(cas, req.fn, host, path, budget, limits, nodes);
      const dir: OutputDirectory = {
        path,
        treeDigest: toWire(tree.treeDigest),
        isTopologicallySorted: false,
        rootDirectoryDigest: toWire(tree.rootDigest),
      };
      out.outputDirectories.push(dir);
    } else {
      throw unsupportedType(`output "${path}"`, st);
    }
  }
  return out;
}

/** What one stored file turned into; `bytes` is kept for small files so they can be inlined. */
export interface UploadedFile {
  readonly digest: Digest;
  readonly executable: boolean;
  readonly bytes?: Uint8Array;
}

const IN_MEMORY_BYTES = 4 * 1024 * 1024;
const READ_CHUNK = 1024 * 1024;

/**
 * Stores a regular file in the CAS. The file is opened with O_NOFOLLOW and
 * checked with fstat, so whatever sits at the path at open time is what gets
 * read; a symlink or FIFO swapped in is refused rather than followed or
 * blocked on. Files up to a few MiB are read once; larger ones are hashed in
 * one pass and streamed into the store in a second only if it lacks them.
 */
export async function uploadFile(
  cas: BlobStore,
  fn: DigestFn,
  hostPath: string,
  budget: OutputBudget,
  what: string,
  keepBytesUpTo = 0,
): Promise<UploadedFile> {
  let fh: FileHandle;
  try {
    fh = await open(hostPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ELOOP") {
      throw RpcError.failedPrecondition(`${what} became a symlink while being collected`);
    }
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw unsupportedType(what, st);
    budget.take(st.size, what);
    const executable = (st.mode & 0o111) !== 0;
    if (st.size <= IN_MEMORY_BYTES) {
      const bytes = await readExactly(fh, st.size);
      const digest = digestOf(fn, bytes);
      await cas.put(digest, bytes);
      return bytes.byteLength <= keepBytesUpTo ? { digest, executable, bytes } : { digest, executable };
    }
    const hasher = createHasher(fn);
    let size = 0;
    for await (const chunk of chunksOf(fh)) {
      hasher.update(chunk);
      size += chunk.byteLength;
    }
    const digest: Digest = { fn, hash: hasher.hex(), sizeBytes: size };
    if ((await cas.findMissing([digest])).length > 0) {
      const writer = await cas.beginWrite(digest);
      try {
        for await (const chunk of chunksOf(fh)) await writer.write(chunk);
        await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
    }
    return { digest, executable };
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: FileHandle, size: number): Promise<Uint8Array> {
  const buf = new Uint8Array(size);
  let off = 0;
  while (off < size) {
    const { bytesRead } = await fh.read(buf, off, size - off, off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off === size ? buf : buf.subarray(0, off);
}

async function* chunksOf(fh: FileHandle): AsyncIterable<Uint8Array> {
  let pos = 0;
  for (;;) {
    const buf = new Uint8Array(READ_CHUNK);
    const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, pos);
    if (bytesRead === 0) return;
    pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

export interface BuiltTree {
  readonly tree: Tree;
  readonly treeDigest: Digest;
  readonly rootDigest: Digest;
}

/**
 * Encodes a directory as a canonical Tree: in every Directory, files,
 * directories and symlinks sorted by name; children deduplicated by digest and
 * ordered by it, so equal outputs always produce the same Tree digest. Bazel
 * re-hashes each child to find it, so the bytes must be exactly canonical;
 * the generated encoder writes fields in tag order and omits defaults.
 * The Tree and every Directory blob are stored, so clients asking for
 * DIRECTORY_ONLY or TREE_AND_DIRECTORY find `root_directory_digest` too.
 */
export async function buildTree(
  cas: BlobStore,
  fn: DigestFn,
  hostDir: string,
  displayPath: string,
  budget: OutputBudget,
  limits: OutputLimits = DEFAULT_OUTPUT_LIMITS,
  nodes: { count: number } = { count: 0 },
): Promise<BuiltTree> {
  const children = new Map<string, { digest: Digest; dir: Directory; bytes: Uint8Array }>();

  const walk = async (abs: string, rel: string, depth: number): Promise<{ dir: Directory; digest: Digest; bytes: Uint8Array }> => {
    if (depth > limits.maxTreeDepth) {
      throw RpcError.failedPrecondition(`output directory "${rel}" is nested deeper than ${limits.maxTreeDepth} levels`);
    }
    const names = (await readdir(abs)).sort(compareNames);
    nodes.count += names.length;
    if (nodes.count > limits.maxTreeNodes) {
      throw RpcError.resourceExhausted(
        `output directories hold more than ${limits.maxTreeNodes} entries (reached in "${rel}"); lre refuses trees that large`,
      );
    }
    const files: FileNode[] = [];
    const directories: DirectoryNode[] = [];
    const symlinks: SymlinkNode[] = [];
    for (const name of names) {
      const childAbs = join(abs, name);
      const childRel = `${rel}/${name}`;
      const st = await lstat(childAbs);
      if (st.isSymbolicLink()) {
        symlinks.push({ name, target: await readlink(childAbs), nodeProperties: undefined });
      } else if (st.isFile()) {
        const f = await uploadFile(cas, fn, childAbs, budget, `output file "${childRel}"`);
        files.push({ name, digest: toWire(f.digest), isExecutable: f.executable, nodeProperties: undefined });
      } else if (st.isDirectory()) {
        const sub = await walk(childAbs, childRel, depth + 1);
        children.set(sub.digest.hash, sub);
        directories.push({ name, digest: toWire(sub.digest) });
      } else {
        throw unsupportedType(`output "${childRel}"`, st);
      }
    }
    const dir: Directory = { files, directories, symlinks, nodeProperties: undefined };
    const bytes = Directory.encode(dir).finish();
    return { dir, digest: digestOf(fn, bytes), bytes };
  };

  const root = await walk(hostDir, displayPath, 0);
  const sortedChildren = [...children.values()].sort((a, b) => (a.digest.hash < b.digest.hash ? -1 : 1));
  const tree: Tree = { root: root.dir, children: sortedChildren.map((c) => c.dir) };
  const treeBytes = Tree.encode(tree).finish();
  const treeDigest = digestOf(fn, treeBytes);
  await cas.put(root.digest, root.bytes);
  for (const c of sortedChildren) await cas.put(c.digest, c.bytes);
  await cas.put(treeDigest, treeBytes);
  return { tree, treeDigest, rootDigest: root.digest };
}

/**
 * Resolves `segments` under `root` one component at a time with lstat: if a
 * parent is a symlink (or not a directory), the output is treated as absent
 * rather than looked up through the link, which could lead anywhere.
 */
async function hostPathWithoutLinks(root: string, segments: readonly string[]): Promise<string | undefined> {
  let cur = root;
  for (const s of segments.slice(0, -1)) {
    cur = join(cur, s);
    try {
      const st = await lstat(cur);
      if (!st.isDirectory()) return undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }
  return join(cur, segments[segments.length - 1]!);
}

/**
 * REAPI: a path listed only in output_files that the action made a
 * directory, or only in output_directories that it made a file, is
 * FAILED_PRECONDITION. (A path in both lists, as Buck2's compatibility mode
 * sends, is "any" and never reaches here.)
 */
function wrongKind(path: string, list: string, found: string): RpcError {
  return RpcError.failedPrecondition(
    `output "${path}" is declared in Command.${list} but the action produced ${found} there; declare it in the other list (or in output_paths) or make the action produce the declared kind`,
  );
}

/**
 * For classifying symlinks in the legacy lists only: follows the link the
 * way the sandbox would, but inside `root` and with lstat alone, never
 * through the host. A relative target is resolved against the link's
 * directory; an absolute one only when it lies under `sandboxRoot` (where the
 * input root appears inside the sandbox); anything else (outside the root,
 * dangling, a loop) counts as not a directory.
 */
async function pointsToDirectoryInside(root: string, linkSegments: readonly string[], sandboxRoot: string | undefined): Promise<boolean> {
  let dir = linkSegments.slice(0, -1);
  let pending = [linkSegments[linkSegments.length - 1]!];
  let hops = 0;
  while (pending.length > 0) {
    const s = pending.shift()!;
    if (s === "" || s === ".") continue;
    if (s === "..") {
      if (dir.length === 0) return false;
      dir = dir.slice(0, -1);
      continue;
    }
    const here = join(root, ...dir, s);
    let st;
    try {
      st = await lstat(here);
    } catch {
      return false;
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) return false;
      const target = await readlink(here);
      if (target.startsWith("/")) {
        const base = (sandboxRoot ?? "").replace(/\/+$/, "");
        if (base === "" || (target !== base && !target.startsWith(`${base}/`))) return false;
        dir = [];
        pending = [...target.slice(base.length).split("/"), ...pending];
      } else {
        pending = [...target.split("/"), ...pending];
      }
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) return false;
    if (pending.length === 0) return st.isDirectory();
    dir = [...dir, s];
  }
  return true; // the walk ended on a directory (e.g. a target of "." or "sub/..")
}

function unsupportedType(label: string, st: { isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): RpcError {
  const kind = st.isFIFO()
    ? "a FIFO"
    : st.isSocket()
      ? "a socket"
      : st.isCharacterDevice() || st.isBlockDevice()
        ? "a device node"
        : "not a regular file, directory or symlink";
  return RpcError.failedPrecondition(
    `${label} is ${kind}; REAPI outputs can only be regular files, directories and symlinks`,
  );
}

function isNotFound(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}
