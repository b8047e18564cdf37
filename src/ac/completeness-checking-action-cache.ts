import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { fromWire } from "../digest/digest";
import { isRpcError, GrpcCode } from "../errors";
import type { Directory, ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { Tree } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ActionCache, CachedResult } from "./action-cache";

/**
 * Returns a cached result only if every blob it references is still in the
 * CAS: output files, stdout/stderr, each output directory's Tree and every
 * file inside that Tree. A hit with a missing blob would send Bazel after
 * bytes that are gone (exit 39, reliability-targets I-4), so it is a miss and
 * the action runs again. Anything malformed in the entry is also a miss,
 * never an internal error. On a hit every referenced blob is touched, so
 * eviction spares what the client was just promised (E-4).
 */
export class CompletenessCheckingActionCache implements ActionCache {
  constructor(
    private readonly base: ActionCache,
    private readonly cas: BlobStore,
  ) {}

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    const entry = await this.base.get(instance, action);
    if (entry === undefined) return undefined;
    const referenced = await this.referencedBlobs(entry.result, action.fn);
    if (referenced === undefined) return undefined;
    if ((await this.cas.findMissing(referenced)).length > 0) return undefined;
    await this.cas.touch(referenced);
    return entry;
  }

  put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    return this.base.put(instance, action, entry);
  }

  close(): Promise<void> {
    return this.base.close();
  }

  /** Every blob the result needs, or undefined if it cannot be complete (bad digest, missing or undecodable Tree). */
  private async referencedBlobs(result: ActionResult, fn: Digest["fn"]): Promise<Digest[] | undefined> {
    try {
      const out: Digest[] = [];
      for (const f of result.outputFiles) out.push(fromWire(fn, f.digest));
      if (result.stdoutDigest !== undefined) out.push(fromWire(fn, result.stdoutDigest));
      if (result.stderrDigest !== undefined) out.push(fromWire(fn, result.stderrDigest));
      for (const d of result.outputDirectories) {
        const treeDigest = fromWire(fn, d.treeDigest);
        out.push(treeDigest);
        const tree = Tree.decode(await this.cas.get(treeDigest));
        const dirs: Directory[] = tree.root === undefined ? [] : [tree.root];
        dirs.push(...tree.children);
        for (const dir of dirs) for (const file of dir.files) out.push(fromWire(fn, file.digest));
      }
      return out;
    } catch (err) {
      if (isRpcError(err) && err.code !== GrpcCode.INVALID_ARGUMENT && err.code !== GrpcCode.NOT_FOUND) throw err;
      // Malformed digests (INVALID_ARGUMENT), a missing Tree (NOT_FOUND) and protobuf decode errors all mean "not a usable hit".
      return undefined;
    }
  }
}
