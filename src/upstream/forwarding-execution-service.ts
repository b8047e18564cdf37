import * as grpc from "@grpc/grpc-js";
import type { BlobStore } from "../cas/blob-store";
import { type Digest, digestKey, fromWire } from "../digest/digest";
import { type DigestConfig, parseInstanceName, requestDigestFn } from "../digest/instance-name";
import { GrpcCode, RpcError, isRpcError } from "../errors";
import { missingError } from "../exec/input-tree";
import { REQUEST_METADATA_HEADER } from "../grpc/execution-service";
import type { ServiceEntry } from "../grpc/service-entry";
import { serverStreamHandler, toServiceError, writeMessage } from "../grpc/status";
import {
  Action,
  Directory,
  type ExecuteRequest,
  ExecutionService,
  type WaitExecutionRequest,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../proto/google/longrunning/operations";
import type { UpstreamClient } from "./upstream-client";
import type { ExecuteUpstreamMode } from "./upstream-config";
import type { UpstreamHealth } from "./upstream-health";
import { type UpstreamLog, messageOf, silentLog } from "./upstream-log";
import type { UpstreamUploader } from "./upstream-uploader";

/** Operation names of forwarded executions carry this prefix, so WaitExecution knows where to go. */
export const UPSTREAM_OPERATION_PREFIX = "upstream/";

export interface ForwardingExecutionOptions {
  readonly mode: Exclude<ExecuteUpstreamMode, "never">;
  /** The local Execution service; absent with --no-exec (then nothing to fall back to). */
  readonly local?: ServiceEntry;
  readonly upstream: UpstreamClient;
  readonly health: UpstreamHealth;
  readonly uploader: UpstreamUploader;
  /** The local CAS (without read-through), where the client uploaded the inputs. */
  readonly localCas: BlobStore;
  readonly digests: DigestConfig;
  readonly instance?: string;
  readonly log?: UpstreamLog;
}

/** Thrown inside forward() when the upstream could not take the action at all. */
class NotStarted extends Error {
  constructor(override readonly cause: RpcError) {
    super(cause.message);
  }
}

/**
 * An Execution service that sends actions to the upstream. Before Execute is
 * forwarded, the action's inputs (Action, Command, every Directory and file
 * of the input root) are uploaded to the upstream where it lacks them, since
 * the client uploaded them here. Operations stream back unchanged except for
 * their names, which get the `upstream/` prefix. In `fallback` mode the local
 * service takes the call when the upstream is in its unreachable cooldown,
 * cannot be reached, or answers UNAVAILABLE or UNIMPLEMENTED before sending
 * any Operation; once an Operation has been relayed, errors go to the client.
 */
export function createForwardingExecutionService(o: ForwardingExecutionOptions): ServiceEntry {
  const log = o.log ?? silentLog;
  const localExecute = o.local?.implementation["execute"] as grpc.handleServerStreamingCall<ExecuteRequest, Operation> | undefined;
  const localWait = o.local?.implementation["waitExecution"] as grpc.handleServerStreamingCall<WaitExecutionRequest, Operation> | undefined;

  const forwardExecute = async (req: ExecuteRequest, call: grpc.ServerWritableStream<ExecuteRequest, Operation>): Promise<void> => {
    const instance = parseInstanceName(req.instanceName);
    const fn = requestDigestFn(o.digests, instance, req.digestFunction);
    const action = fromWire(fn, req.actionDigest, "ExecuteRequest.action_digest");
    const upInstance = o.instance ?? instance;
    try {
      await pushInputs(o, action, upInstance);
    } catch (err) {
      if (isRpcError(err, GrpcCode.FAILED_PRECONDITION)) throw err;
      throw new NotStarted(o.upstream.error("uploading inputs", err));
    }
    await relay(o.upstream.execute({ ...req, instanceName: upInstance }, forwardedMetadata(call.metadata)), call, o);
  };

  const execute: grpc.handleServerStreamingCall<ExecuteRequest, Operation> = (call) => {
    const local = o.mode === "fallback" ? localExecute : undefined;
    if (local !== undefined && !o.health.usable()) {
      local(call);
      return;
    }
    void (async () => {
      try {
        await forwardExecute(call.request, call);
        o.health.succeeded();
        if (!call.cancelled) call.end();
      } catch (err) {
        let failure = err;
        if (err instanceof NotStarted) {
          o.health.failed(err.cause);
          if (local !== undefined && FALLBACK_CODES.has(err.cause.code)) {
            log.info(`execute: the upstream cannot take the action (${err.cause.message}); running it locally`);
            local(call);
            return;
          }
          failure = err.cause;
        }
        if (!call.cancelled) call.emit("error", toServiceError(failure, "Execute"));
      }
    })();
  };

  const waitExecution: grpc.handleServerStreamingCall<WaitExecutionRequest, Operation> = (call) => {
    if (!call.request.name.startsWith(UPSTREAM_OPERATION_PREFIX) && localWait !== undefined) {
      localWait(call);
      return;
    }
    serverStreamHandler<WaitExecutionRequest, Operation>("WaitExecution", async (req, c) => {
      if (!req.name.startsWith(UPSTREAM_OPERATION_PREFIX)) {
        throw RpcError.notFound(`operation "${req.name}" is unknown; run Execute again`);
      }
      try {
        await relay(o.upstream.waitExecution(req.name.slice(UPSTREAM_OPERATION_PREFIX.length), forwardedMetadata(c.metadata)), c, o);
      } catch (err) {
        throw err instanceof NotStarted ? err.cause : err;
      }
    })(call);
  };

  return { definition: ExecutionService, implementation: { execute, waitExecution } };
}

/** Upstream answers, before any Operation, that send an action to the local executor in `fallback` mode. */
const FALLBACK_CODES: ReadonlySet<number> = new Set([GrpcCode.UNAVAILABLE, GrpcCode.UNIMPLEMENTED, GrpcCode.DEADLINE_EXCEEDED]);

/** Pipes an upstream Operation stream to the client, renaming operations. */
async function relay(
  stream: grpc.ClientReadableStream<Operation>,
  call: grpc.ServerWritableStream<unknown, Operation>,
  o: ForwardingExecutionOptions,
): Promise<void> {
  const cancel = () => stream.cancel();
  call.once("cancelled", cancel);
  let started = false;
  try {
    for await (const op of stream as AsyncIterable<Operation>) {
      started = true;
      await writeMessage(call, { ...op, name: `${UPSTREAM_OPERATION_PREFIX}${op.name}` });
    }
  } catch (err) {
    const rpc = o.upstream.error("Execute", err);
    if (!started) throw new NotStarted(rpc);
    throw rpc;
  } finally {
    call.off("cancelled", cancel);
  }
}

/** Only the REAPI request metadata travels on; the client's other headers are for this server. */
function forwardedMetadata(md: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  for (const v of md.get(REQUEST_METADATA_HEADER)) out.add(REQUEST_METADATA_HEADER, v);
  return out;
}

/**
 * Uploads what the upstream lacks of the action's inputs, reading them from
 * the local CAS. Blobs neither side has are the client's to upload:
 * FAILED_PRECONDITION with MISSING violations, which Bazel acts on.
 */
async function pushInputs(o: ForwardingExecutionOptions, action: Digest, upInstance: string): Promise<void> {
  const fn = action.fn;
  const local: Digest[] = [];
  const unknown: Digest[] = [];
  const seen = new Set<string>();
  const getLocal = async (d: Digest): Promise<Uint8Array | undefined> => {
    try {
      return await o.localCas.get(d);
    } catch (err) {
      if (isRpcError(err, GrpcCode.NOT_FOUND)) return undefined;
      throw err;
    }
  };
  const actionBytes = await getLocal(action);
  seen.add(digestKey(action));
  if (actionBytes === undefined) {
    unknown.push(action);
  } else {
    local.push(action);
    const a = Action.decode(actionBytes);
    const files: Digest[] = [fromWire(fn, a.commandDigest, "Action.command_digest")];
    let frontier: Digest[] = a.inputRootDigest === undefined ? [] : [fromWire(fn, a.inputRootDigest, "Action.input_root_digest")];
    while (frontier.length > 0) {
      const next: Digest[] = [];
      await Promise.all(
        frontier.map(async (d) => {
          const k = digestKey(d);
          if (seen.has(k)) return;
          seen.add(k);
          const bytes = await getLocal(d);
          if (bytes === undefined) {
            unknown.push(d);
            return;
          }
          local.push(d);
          const dir = Directory.decode(bytes);
          for (const f of dir.files) files.push(fromWire(fn, f.digest, `digest of input file "${f.name}"`));
          for (const s of dir.directories) next.push(fromWire(fn, s.digest, `digest of input directory "${s.name}"`));
        }),
      );
      frontier = next;
    }
    const uniqueFiles = files.filter((d) => !seen.has(digestKey(d)) && seen.add(digestKey(d)));
    const absent = new Set((await o.localCas.findMissing(uniqueFiles)).map(digestKey));
    for (const d of uniqueFiles) (absent.has(digestKey(d)) ? unknown : local).push(d);
  }
  await o.uploader.uploadBlobs(local, upInstance);
  if (unknown.length > 0) {
    const gone = await o.upstream.findMissing(upInstance, unknown, o.upstream.timeouts.uploadMs);
    if (gone.length > 0) throw missingError(gone);
  }
}
