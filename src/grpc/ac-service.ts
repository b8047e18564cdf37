import type { ActionCache } from "../ac/action-cache";
import { validateActionResult } from "../ac/validate-action-result";
import type { BlobStore } from "../cas/blob-store";
import { type DigestFn, formatDigest, fromWire, isEmptyDigest } from "../digest/digest";
import { type DigestConfig, parseInstanceName, requestDigestFn } from "../digest/instance-name";
import { RpcError, isRpcError } from "../errors";
import { GrpcCode } from "../errors";
import {
  ActionCacheService,
  ActionResult,
  type Digest as WireDigest,
  type GetActionResultRequest,
  type UpdateActionResultRequest,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ServiceEntry } from "./service-entry";
import { unaryHandler } from "./status";

export interface AcServiceOptions {
  readonly ac: ActionCache;
  readonly cas: BlobStore;
  readonly digests: DigestConfig;
  /** Counts lookups for `lre stats`; a hit is a result actually returned. */
  readonly onAcLookup?: (hit: boolean) => void;
}

/**
 * Total bytes inlined into one GetActionResult reply. Inlining is only a hint
 * (REAPI lets the server decline), and staying well under 4 MiB keeps the
 * reply readable by clients with default message limits.
 */
export const MAX_INLINE_BYTES = 1024 * 1024;

export function createAcService(options: AcServiceOptions): ServiceEntry {
  const { ac, cas, digests, onAcLookup } = options;

  return {
    definition: ActionCacheService,
    implementation: {
      getActionResult: unaryHandler<GetActionResultRequest, ActionResult>("GetActionResult", async (req) => {
        const instance = parseInstanceName(req.instanceName);
        const fn = requestDigestFn(digests, instance, req.digestFunction);
        const action = fromWire(fn, req.actionDigest, "action_digest");
        const entry = await ac.get(instance, action);
        const result = entry === undefined ? undefined : await inline(cas, fn, entry.result, req);
        onAcLookup?.(result !== undefined);
        if (result === undefined) {
          throw RpcError.notFound(`no action result for ${formatDigest(action)} in instance "${instance}"; run the action`);
        }
        return result;
      }),

      updateActionResult: unaryHandler<UpdateActionResultRequest, ActionResult>("UpdateActionResult", async (req) => {
        const instance = parseInstanceName(req.instanceName);
        const fn = requestDigestFn(digests, instance, req.digestFunction);
        const action = fromWire(fn, req.actionDigest, "action_digest");
        // An absent result is stored as the empty one: Buck2's permission probe sends exactly that.
        const result = req.actionResult ?? ActionResult.fromPartial({});
        validateActionResult(result, fn);
        await ac.put(instance, action, { result, origin: "client" });
        return result;
      }),
    },
  };
}

/**
 * Fills the inline fields a client asked for, within MAX_INLINE_BYTES. A blob
 * that is gone, or a digest that does not parse, makes the whole entry a miss
 * (undefined): a result the client cannot use must never look like a hit.
 */
async function inline(
  cas: BlobStore,
  fn: DigestFn,
  stored: ActionResult,
  req: GetActionResultRequest,
): Promise<ActionResult | undefined> {
  const result = ActionResult.fromPartial(stored);
  let budget = MAX_INLINE_BYTES;
  const fetch = async (d: WireDigest | undefined, what: string): Promise<Buffer | undefined> => {
    if (d === undefined) return undefined;
    const digest = fromWire(fn, d, what);
    if (digest.sizeBytes > budget) return undefined;
    if (isEmptyDigest(digest)) return Buffer.alloc(0);
    const data = await cas.get(digest);
    budget -= data.byteLength;
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  };
  try {
    if (req.inlineStdout && result.stdoutRaw.byteLength === 0) {
      result.stdoutRaw = (await fetch(result.stdoutDigest, "stdout_digest")) ?? result.stdoutRaw;
    }
    if (req.inlineStderr && result.stderrRaw.byteLength === 0) {
      result.stderrRaw = (await fetch(result.stderrDigest, "stderr_digest")) ?? result.stderrRaw;
    }
    if (req.inlineOutputFiles.length > 0) {
      const wanted = new Set(req.inlineOutputFiles);
      for (const file of result.outputFiles) {
        if (wanted.has(file.path) && file.contents.byteLength === 0) {
          file.contents = (await fetch(file.digest, `output file "${file.path}" digest`)) ?? file.contents;
        }
      }
    }
  } catch (err) {
    if (isRpcError(err, GrpcCode.NOT_FOUND) || isRpcError(err, GrpcCode.INVALID_ARGUMENT)) return undefined;
    throw err;
  }
  return result;
}
