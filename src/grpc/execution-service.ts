import { randomUUID } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import type { ActionCache, CachedResult } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import type { Digest, DigestFn } from "../digest/digest";
import { DIGEST_FUNCTIONS, digestKey, fnToWire, fromWire, toWire } from "../digest/digest";
import { type DigestConfig, instanceDefaultFn, parseInstanceName, requestDigestFn } from "../digest/instance-name";
import { GrpcCode, RpcError } from "../errors";
import type { ExecuteTask, ExecutionOutcome, PreparedAction, RunHooks } from "../exec/local-executor";
import type { OperationStage, Scheduler } from "../exec/scheduler";
import {
  Action,
  DigestFunction_Value,
  ExecuteOperationMetadata,
  ExecuteResponse,
  ExecutionService,
  ExecutionStage_Value,
  RequestMetadata,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ActionResult, ExecuteRequest, WaitExecutionRequest } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../proto/google/longrunning/operations";
import type { ServiceEntry } from "./service-entry";
import { serverStreamHandler, writeMessage } from "./status";

export const EXECUTE_OPERATION_METADATA_TYPE_URL = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
export const EXECUTE_RESPONSE_TYPE_URL = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";
export const REQUEST_METADATA_HEADER = "build.bazel.remote.execution.v2.requestmetadata-bin";

/** The executor as the service sees it: LocalExecutor, or any decorator around it. */
export interface ActionExecutor {
  prepare(task: ExecuteTask): Promise<PreparedAction>;
  execute(prepared: PreparedAction, hooks?: RunHooks): Promise<ExecuteResponse>;
  /** The prepared action waits behind others (it may shed memory meanwhile). */
  queued?(prepared: PreparedAction): void;
  /** The prepared action will never run: it joined identical work in flight. */
  discard?(prepared: PreparedAction): void;
  /**
   * Identifies the server's default closure now. A cached result recorded
   * with another default closure hash was built with another toolchain and is
   * a miss.
   */
  currentDefaultClosureHash?(): string | undefined;
}

export type { ExecutionOutcome };

export interface ExecutionServiceDeps {
  readonly cas: BlobStore;
  readonly ac: ActionCache;
  readonly executor: ActionExecutor;
  readonly scheduler: Scheduler<ExecutionOutcome>;
  readonly digests: DigestConfig;
  /** Interval of repeated stage updates while an action waits or runs; Buck2 wants one at least every 30 s. @default 10 s */
  readonly progressIntervalMs?: number;
  /** Counts action-cache lookups for `lre stats`. */
  readonly onAcLookup?: (hit: boolean) => void;
  /** Where AC write failures are reported; the action's response is unaffected. */
  readonly onError?: (message: string, cause: unknown) => void;
}

/**
 * The REAPI Execution service, kept thin: parse, consult the action cache,
 * hand the action to the executor's prepare phase (so every client mistake is
 * a gRPC error before the first Operation is sent), queue it, and stream
 * Operations until it is done. The stream stays open to the end because Buck2
 * never calls WaitExecution. The work belongs to the scheduler, not the call:
 * a client that disconnects does not stop its action, whose result is still
 * cached for the retry.
 */
export function createExecutionService(deps: ExecutionServiceDeps): ServiceEntry {
  const interval = deps.progressIntervalMs ?? 10_000;
  const report = deps.onError ?? ((m, c) => console.error(`lre: ${m}`, c));
  // WaitExecution must report the action digest before the outcome exists.
  const digestOf = new WeakMap<object, Digest>();

  const execute = async (req: ExecuteRequest, call: grpc.ServerWritableStream<ExecuteRequest, Operation>): Promise<void> => {
    const instance = parseInstanceName(req.instanceName);
    const fn = await digestFnFor(deps, instance, req);
    const actionDigest = fromWire(fn, req.actionDigest, "ExecuteRequest.action_digest");

    // The Action is read first (one small blob): a do_not_cache action must
    // never be answered from the cache. An absent or malformed Action is
    // left for prepare to report.
    if (!req.skipCacheLookup && !(await doNotCache(deps.cas, actionDigest))) {
      const hit = await cachedResponse(deps, instance, actionDigest);
      deps.onAcLookup?.(hit !== undefined);
      if (hit !== undefined) {
        // Not registered with the scheduler: WaitExecution answers NOT_FOUND and Bazel simply re-executes, hitting again.
        await writeMessage(call, doneOperation(`operations/${randomUUID()}`, actionDigest, hit));
        return;
      }
    }

    const task: ExecuteTask = {
      instance,
      actionDigest,
      skipCacheLookup: req.skipCacheLookup,
      inlineStdout: req.inlineStdout,
      inlineStderr: req.inlineStderr,
      inlineOutputFiles: req.inlineOutputFiles,
    };
    const prepared = await deps.executor.prepare(task);
    const { op, joined } = deps.scheduler.submit({
      client: clientIdentity(call),
      ...(prepared.doNotCache ? {} : { dedupKey: `${instance}\0${digestKey(actionDigest)}` }),
      reportsExecuting: true,
      run: async ({ queuedAtMs, executing, releaseSlot }) => {
        // An identical operation may have finished (and left the scheduler,
        // so nothing could join it) after the lookup above: while this one
        // was being prepared or waited in the queue. Its result is in the
        // cache by then, since an operation completes only once its result
        // is cached, so looking again here is what keeps it from running twice.
        if (!req.skipCacheLookup && !prepared.doNotCache) {
          // A failing lookup only costs the saving: the action runs.
          const hit = await cachedResponse(deps, instance, actionDigest).catch((err: unknown) => {
            report(`looking up action ${actionDigest.hash} in the action cache again before running it failed`, err);
            return undefined;
          });
          if (hit !== undefined) {
            deps.executor.discard?.(prepared);
            return { actionDigest, response: hit };
          }
        }
        const response = await deps.executor.execute(prepared, { queuedAtMs, onExecuting: executing });
        // The sandbox and exec dir are done with; waiting for the AC write's
        // fsync needs no job slot, so the next action starts meanwhile. The
        // operation still completes only once the result is cached.
        releaseSlot();
        if (cacheable(prepared, response)) {
          try {
            const entry: CachedResult = {
              result: withoutInlineBytes(response.result!),
              origin: "sandbox",
              ...(prepared.defaultClosureHash === undefined ? {} : { closureHash: prepared.defaultClosureHash }),
            };
            await deps.ac.put(instance, actionDigest, entry);
          } catch (err) {
            report(`caching the result of action ${actionDigest.hash} failed`, err);
          }
        }
        return { actionDigest, response };
      },
    });
    if (joined) deps.executor.discard?.(prepared);
    else if (op.stage === "queued") deps.executor.queued?.(prepared);
    digestOf.set(op, actionDigest);
    await writeMessage(call, stageOperation(op.name, actionDigest, "cache-check"));
    await streamUntilDone(call, op, actionDigest, interval);
  };

  const waitExecution = async (
    req: WaitExecutionRequest,
    call: grpc.ServerWritableStream<WaitExecutionRequest, Operation>,
  ): Promise<void> => {
    const op = deps.scheduler.find(req.name);
    if (op === undefined) {
      throw RpcError.notFound(
        `operation "${req.name}" is unknown: it never existed, finished long ago, or the server restarted; call Execute again`,
      );
    }
    await streamUntilDone(call, op, digestOf.get(op), interval);
  };

  return {
    definition: ExecutionService,
    implementation: {
      execute: serverStreamHandler<ExecuteRequest, Operation>("Execute", execute),
      waitExecution: serverStreamHandler<WaitExecutionRequest, Operation>("WaitExecution", waitExecution),
    },
  };
}

/**
 * Sends the current stage, then again on every change and every `interval`
 * while nothing changes, then the final Operation. Returns early (without
 * touching the work) when the client goes away.
 */
async function streamUntilDone(
  call: grpc.ServerWritableStream<unknown, Operation>,
  op: {
    readonly name: string;
    readonly stage: OperationStage;
    readonly done: Promise<ExecutionOutcome>;
    subscribe(l: (s: OperationStage) => void): () => void;
  },
  actionDigest: Digest | undefined,
  interval: number,
): Promise<void> {
  let failed = false;
  const send = (stage: OperationStage): void => {
    if (stage === "done" || call.cancelled || failed) return;
    writeMessage(call, stageOperation(op.name, actionDigest, stage)).catch(() => {
      failed = true;
    });
  };
  send(op.stage);
  const unsubscribe = op.subscribe(send);
  const timer = setInterval(() => send(op.stage), interval);
  try {
    const outcome = await Promise.race([op.done, cancelled(call)]);
    if (outcome === undefined || call.cancelled) return;
    await writeMessage(call, doneOperation(op.name, outcome.actionDigest, outcome.response));
  } finally {
    clearInterval(timer);
    unsubscribe();
  }
}

function cancelled(call: grpc.ServerWritableStream<unknown, Operation>): Promise<undefined> {
  return new Promise((resolve) => {
    if (call.cancelled) resolve(undefined);
    else call.once("cancelled", () => resolve(undefined));
  });
}

/**
 * The result as stored: inlined bytes stay out of the cache (every hit would
 * carry them, whatever the client asked); GetActionResult and Execute inline
 * from the CAS on request.
 */
function withoutInlineBytes(result: ActionResult): ActionResult {
  return {
    ...result,
    stdoutRaw: Buffer.alloc(0),
    stderrRaw: Buffer.alloc(0),
    outputFiles: result.outputFiles.map((f) => ({ ...f, contents: Buffer.alloc(0) })),
  };
}

/**
 * The cached result of an action as an ExecuteResponse, or undefined on a
 * miss. A result recorded with another server default closure than the
 * current one was built with another toolchain, and is a miss.
 */
async function cachedResponse(deps: ExecutionServiceDeps, instance: string, actionDigest: Digest): Promise<ExecuteResponse | undefined> {
  const hit = await deps.ac.get(instance, actionDigest);
  if (hit === undefined) return undefined;
  if (hit.closureHash !== undefined && hit.closureHash !== deps.executor.currentDefaultClosureHash?.()) return undefined;
  return { result: hit.result, cachedResult: true, status: undefined, serverLogs: {}, message: "" };
}

/** Action.do_not_cache, or false when the Action cannot be read (prepare reports that). */
async function doNotCache(cas: BlobStore, actionDigest: Digest): Promise<boolean> {
  try {
    return Action.decode(await cas.get(actionDigest)).doNotCache;
  } catch {
    return false;
  }
}

/** REAPI: only successful runs are cached — exit 0, OK status, and not do_not_cache. */
function cacheable(prepared: PreparedAction, response: ExecuteResponse): boolean {
  return (
    !prepared.doNotCache &&
    response.result !== undefined &&
    response.result.exitCode === 0 &&
    (response.status === undefined || response.status.code === GrpcCode.OK)
  );
}

const STAGES: Record<Exclude<OperationStage, "done"> | "cache-check", ExecutionStage_Value> = {
  "cache-check": ExecutionStage_Value.CACHE_CHECK,
  queued: ExecutionStage_Value.QUEUED,
  executing: ExecutionStage_Value.EXECUTING,
};

function metadataAny(stage: ExecutionStage_Value, actionDigest: Digest | undefined): Operation["metadata"] {
  const meta: ExecuteOperationMetadata = {
    stage,
    actionDigest: actionDigest === undefined ? undefined : toWire(actionDigest),
    stdoutStreamName: "",
    stderrStreamName: "",
    partialExecutionMetadata: undefined,
    digestFunction: actionDigest === undefined ? DigestFunction_Value.UNKNOWN : fnToWire(actionDigest.fn),
  };
  return { typeUrl: EXECUTE_OPERATION_METADATA_TYPE_URL, value: Buffer.from(ExecuteOperationMetadata.encode(meta).finish()) };
}

function stageOperation(name: string, actionDigest: Digest | undefined, stage: Exclude<OperationStage, "done"> | "cache-check"): Operation {
  return { name, metadata: metadataAny(STAGES[stage], actionDigest), done: false };
}

/** The last Operation: COMPLETED metadata and the response; `error` is never used (REAPI). */
export function doneOperation(name: string, actionDigest: Digest, response: ExecuteResponse): Operation {
  return {
    name,
    metadata: metadataAny(ExecutionStage_Value.COMPLETED, actionDigest),
    done: true,
    response: { typeUrl: EXECUTE_RESPONSE_TYPE_URL, value: Buffer.from(ExecuteResponse.encode(response).finish()) },
  };
}

/**
 * Clients are told apart for fair scheduling by Bazel's and Buck2's
 * tool_invocation_id (one per build), falling back to the peer address.
 */
function clientIdentity(call: grpc.ServerWritableStream<unknown, unknown>): string {
  const raw = call.metadata.get(REQUEST_METADATA_HEADER)[0];
  if (raw !== undefined && typeof raw !== "string") {
    try {
      const meta = RequestMetadata.decode(raw);
      if (meta.toolInvocationId !== "") return `invocation:${meta.toolInvocationId}`;
    } catch {
      // A malformed header only costs fairness; fall back to the peer.
    }
  }
  return `peer:${call.getPeer()}`;
}

/**
 * The request's digest function. Buck2 never sends one, so when the request
 * is silent and the Action is absent under the instance's default function,
 * the other functions lre supports are tried: the Action's bytes are in the
 * CAS under the function the client hashed them with.
 */
async function digestFnFor(deps: ExecutionServiceDeps, instance: string, req: ExecuteRequest): Promise<DigestFn> {
  const fn = requestDigestFn(deps.digests, instance, req.digestFunction);
  if (req.digestFunction !== DigestFunction_Value.UNKNOWN || req.actionDigest === undefined) return fn;
  const fallback = instanceDefaultFn(deps.digests, instance);
  const candidates = [fallback, ...DIGEST_FUNCTIONS.filter((f) => f !== fallback)];
  for (const candidate of candidates) {
    const d = fromWire(candidate, req.actionDigest, "ExecuteRequest.action_digest");
    if ((await deps.cas.findMissing([d])).length === 0) return candidate;
  }
  return fn;
}
