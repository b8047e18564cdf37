import * as grpc from "@grpc/grpc-js";
import {
  ActionCacheClient,
  type ActionResult,
  type BatchReadBlobsRequest,
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsRequest,
  type BatchUpdateBlobsResponse,
  CapabilitiesClient,
  ContentAddressableStorageClient,
  ExecuteRequest,
  ExecutionClient,
  type FindMissingBlobsRequest,
  type FindMissingBlobsResponse,
  GetActionResultRequest,
  type GetCapabilitiesRequest,
  GetTreeRequest,
  type GetTreeResponse,
  type ServerCapabilities,
  type UpdateActionResultRequest,
  WaitExecutionRequest,
  BatchReadBlobsRequest as BatchReadBlobsRequestFns,
  BatchUpdateBlobsRequest as BatchUpdateBlobsRequestFns,
  FindMissingBlobsRequest as FindMissingBlobsRequestFns,
  GetCapabilitiesRequest as GetCapabilitiesRequestFns,
  UpdateActionResultRequest as UpdateActionResultRequestFns,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import {
  ByteStreamClient,
  QueryWriteStatusRequest,
  type QueryWriteStatusResponse,
  ReadRequest,
  WriteRequest,
  type WriteResponse,
} from "../../src/proto/google/bytestream/bytestream";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { Status } from "../../src/proto/google/rpc/status";

/**
 * Typed REAPI clients for tests of every layer: the generated grpc-js clients
 * plus promise-returning wrappers, so a test reads as the protocol exchange it
 * specifies. Requests are partial messages; omitted fields take proto defaults,
 * exactly as a client that never sets them would send.
 */

/** A request where every field may be omitted (recursively), as `fromPartial` accepts. */
export type PartialRequest<T> = DeepPartial<T>;
type DeepPartial<T> = T extends Buffer | Uint8Array | string | number | boolean | undefined ? T
  : T extends Array<infer U> ? Array<DeepPartial<U>>
  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> }
  : T;

/** `unix:///abs/path` for a socket path, `host:port` passes through. */
export function targetFor(address: string): string {
  return address.startsWith("/") ? `unix://${address}` : address;
}

/** Channel options mirroring what REAPI clients use: large messages, and keepalive pings like Buck2's. */
export const CLIENT_OPTIONS: grpc.ClientOptions = {
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
};

export interface ReapiClients {
  readonly capabilities: CapabilitiesClient;
  readonly cas: ContentAddressableStorageClient;
  readonly ac: ActionCacheClient;
  readonly bytestream: ByteStreamClient;
  readonly execution: ExecutionClient;

  getCapabilities(req?: PartialRequest<GetCapabilitiesRequest>, md?: grpc.Metadata): Promise<ServerCapabilities>;
  findMissingBlobs(req: PartialRequest<FindMissingBlobsRequest>, md?: grpc.Metadata): Promise<FindMissingBlobsResponse>;
  batchUpdateBlobs(req: PartialRequest<BatchUpdateBlobsRequest>, md?: grpc.Metadata): Promise<BatchUpdateBlobsResponse>;
  batchReadBlobs(req: PartialRequest<BatchReadBlobsRequest>, md?: grpc.Metadata): Promise<BatchReadBlobsResponse>;
  /** All responses of a GetTree stream. */
  getTree(req: PartialRequest<GetTreeRequest>, md?: grpc.Metadata): Promise<GetTreeResponse[]>;
  getActionResult(req: PartialRequest<GetActionResultRequest>, md?: grpc.Metadata): Promise<ActionResult>;
  updateActionResult(req: PartialRequest<UpdateActionResultRequest>, md?: grpc.Metadata): Promise<ActionResult>;
  /** The concatenated data of a ByteStream Read, and the number of messages it came in. */
  read(req: PartialRequest<ReadRequest>, md?: grpc.Metadata): Promise<{ data: Buffer; messages: number }>;
  /** Sends the given WriteRequests in order, then half-closes, and returns the server's reply. */
  write(requests: readonly PartialRequest<WriteRequest>[], md?: grpc.Metadata): Promise<WriteResponse>;
  /**
   * Uploads `data` under `resourceName` in `chunkBytes` pieces starting at `offset`,
   * with finish_write on the last piece, as Bazel's uploader does.
   */
  writeBlob(resourceName: string, data: Uint8Array, options?: { chunkBytes?: number; offset?: number }): Promise<WriteResponse>;
  queryWriteStatus(resourceName: string, md?: grpc.Metadata): Promise<QueryWriteStatusResponse>;
  /** Every Operation an Execute stream yields until it ends. */
  execute(req: PartialRequest<ExecuteRequest>, md?: grpc.Metadata): Promise<Operation[]>;
  waitExecution(name: string, md?: grpc.Metadata): Promise<Operation[]>;
  close(): void;
}

type Callback<Res> = (err: grpc.ServiceError | null, res: Res) => void;

function unary<Res>(start: (cb: Callback<Res>) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    start((err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Collects a server stream; rejects with the stream's ServiceError. */
export function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    stream.on("data", (m: T) => out.push(m));
    stream.on("error", reject);
    stream.on("end", () => resolve(out));
  });
}

/** Creates clients for a socket path (`/tmp/x.sock`), `unix:` target, or `host:port`. */
export function createClients(
  address: string,
  options: grpc.ClientOptions = {},
  creds: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): ReapiClients {
  const target = targetFor(address);
  const opts = { ...CLIENT_OPTIONS, ...options };
  const capabilities = new CapabilitiesClient(target, creds, opts);
  // One channel for all services: REAPI clients multiplex on a single connection.
  const channelOverride = { ...opts, channelOverride: capabilities.getChannel() };
  const cas = new ContentAddressableStorageClient(target, creds, channelOverride);
  const ac = new ActionCacheClient(target, creds, channelOverride);
  const bytestream = new ByteStreamClient(target, creds, channelOverride);
  const execution = new ExecutionClient(target, creds, channelOverride);
  const meta = (md?: grpc.Metadata) => md ?? new grpc.Metadata();

  return {
    capabilities,
    cas,
    ac,
    bytestream,
    execution,
    getCapabilities: (req = {}, md) =>
      unary((cb) => capabilities.getCapabilities(GetCapabilitiesRequestFns.fromPartial(req), meta(md), cb)),
    findMissingBlobs: (req, md) => unary((cb) => cas.findMissingBlobs(FindMissingBlobsRequestFns.fromPartial(req), meta(md), cb)),
    batchUpdateBlobs: (req, md) => unary((cb) => cas.batchUpdateBlobs(BatchUpdateBlobsRequestFns.fromPartial(req), meta(md), cb)),
    batchReadBlobs: (req, md) => unary((cb) => cas.batchReadBlobs(BatchReadBlobsRequestFns.fromPartial(req), meta(md), cb)),
    getTree: (req, md) => collect(cas.getTree(GetTreeRequest.fromPartial(req), meta(md))),
    getActionResult: (req, md) => unary((cb) => ac.getActionResult(GetActionResultRequest.fromPartial(req), meta(md), cb)),
    updateActionResult: (req, md) =>
      unary((cb) => ac.updateActionResult(UpdateActionResultRequestFns.fromPartial(req), meta(md), cb)),
    read: async (req, md) => {
      const msgs = await collect(bytestream.read(ReadRequest.fromPartial(req), meta(md)));
      return { data: Buffer.concat(msgs.map((m) => m.data)), messages: msgs.length };
    },
    write: (requests, md) =>
      unary((cb) => {
        const call = bytestream.write(meta(md), cb);
        for (const r of requests) call.write(WriteRequest.fromPartial(r));
        call.end();
        return call;
      }),
    writeBlob: (resourceName, data, options = {}) => {
      const chunk = options.chunkBytes ?? 64 * 1024;
      const start = options.offset ?? 0;
      const requests: PartialRequest<WriteRequest>[] = [];
      let at = start;
      do {
        const end = Math.min(at + chunk, data.byteLength);
        requests.push({
          resourceName: at === start ? resourceName : "",
          writeOffset: at,
          data: Buffer.from(data.subarray(at, end)),
          finishWrite: end === data.byteLength,
        });
        at = end;
      } while (at < data.byteLength);
      return unary((cb) => {
        const call = bytestream.write(new grpc.Metadata(), cb);
        for (const r of requests) call.write(WriteRequest.fromPartial(r));
        call.end();
        return call;
      });
    },
    queryWriteStatus: (resourceName, md) =>
      unary((cb) => bytestream.queryWriteStatus(QueryWriteStatusRequest.fromPartial({ resourceName }), meta(md), cb)),
    execute: (req, md) => collect(execution.execute(ExecuteRequest.fromPartial(req), meta(md))),
    waitExecution: (name, md) => collect(execution.waitExecution(WaitExecutionRequest.fromPartial({ name }), meta(md))),
    close: () => {
      for (const c of [cas, ac, bytestream, execution, capabilities]) c.close();
    },
  };
}

/** Awaits a call expected to fail and returns its ServiceError; a success is a test failure. */
export async function rpcError(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error && typeof (err as grpc.ServiceError).code === "number") return err as grpc.ServiceError;
    throw err;
  }
  throw new Error("expected the call to fail with a gRPC error, but it succeeded");
}

/** The `google.rpc.Status` a server put in the `grpc-status-details-bin` trailer, if any. */
export function statusDetails(err: grpc.ServiceError): Status | undefined {
  const raw = err.metadata?.get("grpc-status-details-bin")[0];
  if (raw === undefined || typeof raw === "string") return undefined;
  return Status.decode(raw);
}

export { grpc };
