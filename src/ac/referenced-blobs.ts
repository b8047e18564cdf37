import type { BlobStore } from "../cas/blob-store";
import { type Digest, digestKey, fromWire, isEmptyDigest } from "../digest/digest";
import { GrpcCode, isRpcError } from "../errors";
import { type ActionResult, type Directory, Tree } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/**
 * The blobs an ActionResult needs to be usable: output files, stdout/stderr,
 * each output directory's Tree and every file inside it. The Trees come first
 * in the answer because their contents can only be listed once they are
 * readable; `readTree` supplies their bytes (from wherever the caller has them).
 * The empty blob is left out: it is always present.
 */
export async function referencedBlobs(
  result: ActionResult,
  fn: Digest["fn"],
  readTree: (tree: Digest) => Promise<Uint8Array>,
): Promise<{ trees: Digest[]; blobs: Digest[] }> {
  const trees: Digest[] = [];
  const blobs = new Map<string, Digest>();
  const add = (d: Digest) => {
    if (!isEmptyDigest(d)) blobs.set(digestKey(d), d);
  };
  for (const f of result.outputFiles) add(fromWire(fn, f.digest, `output file "${f.path}" digest`));
  if (result.stdoutDigest !== undefined) add(fromWire(fn, result.stdoutDigest, "stdout_digest"));
  if (result.stderrDigest !== undefined) add(fromWire(fn, result.stderrDigest, "stderr_digest"));
  for (const d of result.outputDirectories) {
    const treeDigest = fromWire(fn, d.treeDigest, `tree digest of "${d.path}"`);
    trees.push(treeDigest);
    const tree = Tree.decode(await readTree(treeDigest));
    const dirs: Directory[] = tree.root === undefined ? [] : [tree.root];
    dirs.push(...tree.children);
    for (const dir of dirs) for (const file of dir.files) add(fromWire(fn, file.digest, `file "${file.name}" in a Tree`));
  }
  return { trees, blobs: [...blobs.values()] };
}

/**
 * The blobs a cached result needs in `cas` (Trees included), or undefined when
 * the result cannot be complete: a malformed digest, or a Tree that is
 * missing or undecodable. Those mean "not a usable hit", never an error.
 */
export async function requiredBlobs(cas: BlobStore, result: ActionResult, fn: Digest["fn"]): Promise<Digest[] | undefined> {
  try {
    const { trees, blobs } = await referencedBlobs(result, fn, (t) => cas.get(t));
    return [...trees, ...blobs];
  } catch (err) {
    if (isRpcError(err) && err.code !== GrpcCode.INVALID_ARGUMENT && err.code !== GrpcCode.NOT_FOUND) throw err;
    return undefined;
  }
}
