import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey, formatDigest, fromWire, isEmptyDigest, missingSubject } from "../digest/digest";
import { RpcError, isRpcError, GrpcCode } from "../errors";
import type { MissingBlob } from "../errors";
import { Action, Command, Directory } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { badNameReason, compareNames, symlinkStaysInside } from "./paths";
import { parallel } from "./pool";

/**
 * Phase one of an action: read and check everything it names before anything
 * touches the filesystem. Every problem found here is the client's and is
 * reported as a gRPC error: INVALID_ARGUMENT for hostile or malformed trees,
 * FAILED_PRECONDITION listing every absent blob at once so Bazel re-uploads
 * them all in one round instead of discovering them one retry at a time.
 */

export interface InputTreeLimits {
  /** Deepest directory nesting accepted; deeper trees are refused before they are walked further. */
  readonly maxDepth: number;
  /** Files, directories and symlinks after expanding shared subtrees; bounds DAG blow-ups. */
  readonly maxNodes: number;
  /** Largest Directory or Command blob decoded in memory. */
  readonly maxMessageBytes: number;
  /** Directories fetched at once. */
  readonly fetchConcurrency: number;
}

export const DEFAULT_INPUT_TREE_LIMITS: InputTreeLimits = {
  maxDepth: 256,
  maxNodes: 1_000_000,
  maxMessageBytes: 64 * 1024 * 1024,
  fetchConcurrency: 64,
};

export interface InputFile {
  /** Relative to the input root, `/`-separated. */
  readonly path: string;
  readonly digest: Digest;
  readonly executable: boolean;
}

export interface InputSymlink {
  readonly path: string;
  readonly target: string;
}

/** A validated input root, flattened. Directories are listed parents first. */
export interface InputTree {
  readonly directories: readonly string[];
  readonly files: readonly InputFile[];
  readonly symlinks: readonly InputSymlink[];
  /** Each distinct file digest once. */
  readonly fileDigests: readonly Digest[];
}

export interface ActionInputs {
  readonly actionDigest: Digest;
  readonly action: Action;
  readonly command: Command;
  readonly tree: InputTree;
}

/** Fetches and validates Action, Command and the whole input tree, collecting every missing blob. */
export async function loadActionInputs(
  cas: BlobStore,
  actionDigest: Digest,
  limits: InputTreeLimits = DEFAULT_INPUT_TREE_LIMITS,
): Promise<ActionInputs> {
  const actionBytes = await fetchOrMissing(cas, actionDigest, limits, "Action");
  if (actionBytes === undefined) {
    throw missingError([actionDigest]);
  }
  const action = decode(Action, actionBytes, `Action ${formatDigest(actionDigest)}`);
  const fn = actionDigest.fn;
  const commandDigest = fromWire(fn, action.commandDigest, "Action.command_digest");
  const rootDigest =
    action.inputRootDigest === undefined ? undefined : fromWire(fn, action.inputRootDigest, "Action.input_root_digest");

  const [commandBytes, walked] = await Promise.all([
    fetchOrMissing(cas, commandDigest, limits, "Command"),
    rootDigest === undefined ? Promise.resolve({ tree: EMPTY_TREE, missing: [] }) : walkInputTree(cas, rootDigest, limits),
  ]);
  const missing = [...walked.missing];
  if (commandBytes === undefined) missing.unshift(commandDigest);
  if (missing.length > 0) throw missingError(missing);
  const command = decode(Command, commandBytes!, `Command ${formatDigest(commandDigest)}`);
  return { actionDigest, action, command, tree: walked.tree };
}

const EMPTY_TREE: InputTree = { directories: [], files: [], symlinks: [], fileDigests: [] };

/**
 * Reads an input root in three steps, so a hostile tree costs little:
 * 1. fetch each distinct Directory once, breadth first and a level at a time
 *    in parallel, validating each as it arrives (at the shallowest depth it
 *    occurs, which is where a `..` symlink has the least room);
 * 2. compute, per distinct Directory, its height and how many nodes it
 *    expands to, rejecting deep trees and DAG blow-ups before any expansion;
 * 3. flatten.
 * Returns the flattened tree and every absent blob: directories whose
 * contents could not be read, and files (checked with findMissing).
 */
export async function walkInputTree(
  cas: BlobStore,
  root: Digest,
  limits: InputTreeLimits = DEFAULT_INPUT_TREE_LIMITS,
): Promise<{ tree: InputTree; missing: Digest[] }> {
  const fn = root.fn;
  const decoded = new Map<string, Directory | null>();
  const missing = new Map<string, Digest>();
  /** Child directory digests of each distinct Directory, in order. */
  const childDigests = new Map<string, Digest[]>();

  let frontier: { path: string[]; digest: Digest }[] = [{ path: [], digest: root }];
  for (let depth = 0; frontier.length > 0; depth++) {
    if (depth > limits.maxDepth) throw tooDeep(limits, frontier[0]!.path.join("/"));
    await fetchDirectories(cas, frontier.map((e) => e.digest), decoded, missing, limits);
    const next: typeof frontier = [];
    const queued = new Set<string>();
    for (const { path, digest } of frontier) {
      const dir = decoded.get(digestKey(digest));
      if (dir === null || dir === undefined) continue; // absent: already listed in `missing`
      validateDirectory(dir, path, path.length === 0 ? "the input root" : `input directory "${path.join("/")}"`);
      const children: Digest[] = [];
      for (const sub of dir.directories) {
        const childPath = [...path, sub.name];
        const d = fromWire(fn, sub.digest, `digest of input directory "${childPath.join("/")}"`);
        children.push(d);
        const k = digestKey(d);
        if (!decoded.has(k) && !queued.has(k)) {
          queued.add(k);
          next.push({ path: childPath, digest: d });
        }
      }
      childDigests.set(digestKey(digest), children);
    }
    frontier = next;
  }

  const { height, size } = measure(root, decoded, childDigests, limits);
  if (height > limits.maxDepth + 1) throw tooDeep(limits, "");
  if (size > limits.maxNodes) {
    throw RpcError.invalidArgument(
      `the input tree expands to more than ${limits.maxNodes} files, directories and symlinks; lre refuses trees that large`,
    );
  }

  const directories: string[] = [];
  const files: InputFile[] = [];
  const symlinks: InputSymlink[] = [];
  const fileDigests = new Map<string, Digest>();
  let level: { prefix: string; digest: Digest }[] = [{ prefix: "", digest: root }];
  while (level.length > 0) {
    const nextLevel: typeof level = [];
    for (const { prefix, digest } of level) {
      const dir = decoded.get(digestKey(digest));
      if (dir === null || dir === undefined) continue;
      for (const f of dir.files) {
        const path = prefix + f.name;
        const d = fromWire(fn, f.digest, `digest of input file "${path}"`);
        files.push({ path, digest: d, executable: f.isExecutable });
        if (!isEmptyDigest(d)) fileDigests.set(digestKey(d), d);
      }
      for (const l of dir.symlinks) symlinks.push({ path: prefix + l.name, target: l.target });
      const children = childDigests.get(digestKey(digest)) ?? [];
      dir.directories.forEach((sub, i) => {
        directories.push(prefix + sub.name);
        nextLevel.push({ prefix: `${prefix}${sub.name}/`, digest: children[i]! });
      });
    }
    level = nextLevel;
  }

  const uniqueFiles = [...fileDigests.values()];
  for (let i = 0; i < uniqueFiles.length; i += 10_000) {
    for (const d of await cas.findMissing(uniqueFiles.slice(i, i + 10_000))) missing.set(digestKey(d), d);
  }
  return { tree: { directories, files, symlinks, fileDigests: uniqueFiles }, missing: [...missing.values()] };
}

function tooDeep(limits: InputTreeLimits, at: string): RpcError {
  return RpcError.invalidArgument(
    `the input tree is nested deeper than ${limits.maxDepth} directories${at === "" ? "" : ` (at "${at}")`}; flatten it`,
  );
}

/**
 * Height and expanded node count of the tree under `root`, memoised per
 * distinct Directory and capped just above the limit so the numbers stay
 * small however large the DAG would expand. Iterative: a chain of distinct
 * directories must not exhaust the call stack.
 */
function measure(
  root: Digest,
  decoded: ReadonlyMap<string, Directory | null>,
  childDigests: ReadonlyMap<string, Digest[]>,
  limits: InputTreeLimits,
): { height: number; size: number } {
  const memo = new Map<string, { height: number; size: number }>();
  const stack: { key: string; expanded: boolean }[] = [{ key: digestKey(root), expanded: false }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (memo.has(top.key)) {
      stack.pop();
      continue;
    }
    const dir = decoded.get(top.key);
    const children = (childDigests.get(top.key) ?? []).map(digestKey);
    if (!top.expanded) {
      top.expanded = true;
      for (const c of children) if (!memo.has(c)) stack.push({ key: c, expanded: false });
      continue;
    }
    stack.pop();
    let height = 0;
    let size = dir ? dir.files.length + dir.symlinks.length + dir.directories.length : 0;
    for (const c of children) {
      const m = memo.get(c) ?? { height: 0, size: 0 };
      height = Math.max(height, m.height);
      size = Math.min(size + m.size, limits.maxNodes + 1);
    }
    memo.set(top.key, { height: height + 1, size });
  }
  return memo.get(digestKey(root))!;
}

/** The one error Bazel's ExecuteRetrier acts on: every violation a MISSING blob. */
export function missingError(digests: readonly Digest[]): RpcError {
  const list: MissingBlob[] = digests.map((d) => ({ subject: missingSubject(d) }));
  const shown = digests.slice(0, 5).map(formatDigest).join(", ");
  const more = digests.length > 5 ? ` and ${digests.length - 5} more` : "";
  return RpcError.failedPrecondition(
    `${digests.length} blob(s) the action needs are not in the CAS: ${shown}${more}; upload them and retry`,
    list,
  );
}

async function fetchDirectories(
  cas: BlobStore,
  digests: readonly Digest[],
  decoded: Map<string, Directory | null>,
  missing: Map<string, Digest>,
  limits: InputTreeLimits,
): Promise<void> {
  const todo: Digest[] = [];
  const seen = new Set<string>();
  for (const d of digests) {
    const k = digestKey(d);
    if (decoded.has(k) || seen.has(k)) continue;
    seen.add(k);
    if (isEmptyDigest(d)) decoded.set(k, Directory.create());
    else todo.push(d);
  }
  await parallel(todo, limits.fetchConcurrency, async (d) => {
    const bytes = await fetchOrMissing(cas, d, limits, "Directory");
    if (bytes === undefined) {
      missing.set(digestKey(d), d);
      decoded.set(digestKey(d), null);
    } else {
      decoded.set(digestKey(d), decode(Directory, bytes, `Directory ${formatDigest(d)}`));
    }
  });
}

async function fetchOrMissing(
  cas: BlobStore,
  d: Digest,
  limits: InputTreeLimits,
  what: string,
): Promise<Uint8Array | undefined> {
  if (d.sizeBytes > limits.maxMessageBytes) {
    throw RpcError.invalidArgument(
      `${what} ${formatDigest(d)} is ${d.sizeBytes} bytes, over the ${limits.maxMessageBytes}-byte limit for messages lre decodes`,
    );
  }
  if (isEmptyDigest(d)) return new Uint8Array(0);
  try {
    return await cas.get(d);
  } catch (err) {
    if (isRpcError(err, GrpcCode.NOT_FOUND)) return undefined;
    throw err;
  }
}

function decode<T>(codec: { decode(b: Uint8Array): T }, bytes: Uint8Array, what: string): T {
  try {
    return codec.decode(bytes);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    throw RpcError.invalidArgument(`${what} is not a valid protobuf message (${detail})`);
  }
}

/**
 * REAPI's rules for one Directory: single-segment names, each list sorted and
 * free of duplicates, and no name shared between files, directories and
 * symlinks. Relative symlink targets must stay inside the root; absolute
 * ones name paths inside the sandbox (see below).
 */
export function validateDirectory(dir: Directory, segments: readonly string[], where: string): void {
  const names = new Set<string>();
  const check = (kind: string, list: readonly { name: string }[]): void => {
    let prev: string | undefined;
    for (const { name } of list) {
      const reason = badNameReason(name);
      if (reason !== undefined) {
        throw RpcError.invalidArgument(`${where} has a ${kind} whose name ${reason}; names must be single path segments`);
      }
      if (prev !== undefined) {
        const c = compareNames(prev, name);
        if (c === 0) throw RpcError.invalidArgument(`${where} lists ${kind} "${name}" twice`);
        if (c > 0) {
          throw RpcError.invalidArgument(
            `${where} lists ${kind}s out of order ("${prev}" before "${name}"); REAPI requires them sorted by name`,
          );
        }
      }
      if (names.has(name)) {
        throw RpcError.invalidArgument(`${where} has more than one entry named "${name}" (e.g. a file and a directory)`);
      }
      names.add(name);
      prev = name;
    }
  };
  check("file", dir.files);
  check("directory", dir.directories);
  check("symlink", dir.symlinks);
  for (const s of dir.symlinks) {
    const path = [...segments, s.name];
    if (s.target === "" || s.target.includes("\0")) {
      throw RpcError.invalidArgument(`input symlink "${path.join("/")}" has an empty target or one containing NUL`);
    }
    // Absolute targets are accepted (GetCapabilities advertises
    // symlink_absolute_path_strategy ALLOWED; Bazel sends links such as
    // `cc -> /nix/store/…-gcc/bin/gcc`): inside the sandbox they resolve in
    // the sandbox's own namespace (closure view, input root, /tmp), never on
    // the host, and lre itself never follows them (staging makes the link,
    // output collection uses lstat). A relative target that climbs out with
    // `..` is still refused: it can only mean a malformed tree.
    if (!s.target.startsWith("/") && !symlinkStaysInside(path, s.target)) {
      throw RpcError.invalidArgument(
        `input symlink "${path.join("/")}" -> "${s.target}" leads outside the input root`,
      );
    }
  }
}

