import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { checkServerIdentity } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { CHUNK_BYTES } from "../cas/blob-store";
import { type Digest, type DigestFn, digestKey, fnToWire, formatDigest, fromWire, toWire } from "../digest/digest";
import { formatReadResourceName, formatWriteResourceName } from "../digest/resource-name";
import { GrpcCode, type MissingBlob, RpcError } from "../errors";
import { PRECONDITION_FAILURE_TYPE_URL, statusFromMetadata } from "../grpc/status";
import {
  ActionCacheClient,
  ActionResult,
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsResponse,
  ContentAddressableStorageClient,
  type FindMissingBlobsResponse,
  type ExecuteRequest,
  ExecutionClient,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { ByteStreamClient, type ReadResponse } from "../proto/google/bytestream/bytestream";
import type { Operation } from "../proto/google/longrunning/operations";
import { PreconditionFailure } from "../proto/google/rpc/error_details";
import type { UpstreamConfig } from "./upstream-config";

/** Deadlines: short for lookups so a slow upstream costs a build little; longer for background uploads. */
export interface UpstreamTimeouts {
  /** FindMissing, GetActionResult, BatchRead issued on behalf of a waiting client. @default 5000 */
  readonly lookupMs: number;
  /** Unary calls of the background uploader. @default 60000 */
  readonly uploadMs: number;
  /** Added per MiB to ByteStream deadlines (both ways). @default 1000 */
  readonly perMiBMs: number;
}

export const DEFAULT_TIMEOUTS: UpstreamTimeouts = { lookupMs: 5000, uploadMs: 60_000, perMiBMs: 1000 };

/** One blob to upload with BatchUpdateBlobs. */
export interface BlobUpload {
  readonly digest: Digest;
  readonly data: Uint8Array;
}

const MiB = 1024 * 1024;
/** Digests per FindMissing request; far under any message limit. */
const FIND_MISSING_CHUNK = 5000;

/**
 * A REAPI client for the upstream: one channel for all services, the bearer
 * token on every call, deadlines on every call, and grpc-js errors turned
 * into RpcError (keeping the code) with the upstream named in the message.
 * Reconnect backoff is kept short so an upstream that comes back is used
 * again within seconds, not after grpc-js's default two minutes.
 */
export class UpstreamClient {
  readonly url: string;
  private readonly cas: ContentAddressableStorageClient;
  private readonly ac: ActionCacheClient;
  private readonly bytestream: ByteStreamClient;
  private readonly execution: ExecutionClient;
  private readonly token: string | undefined;
  readonly timeouts: UpstreamTimeouts;

  constructor(cfg: UpstreamConfig, timeouts: Partial<UpstreamTimeouts> = {}) {
    this.url = cfg.url;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...timeouts };
    this.token = cfg.tokenFile === undefined ? undefined : readToken(cfg.tokenFile);
    const host = /^(\[[^\]]+\]|[^:]+):\d+$/.exec(cfg.target)?.[1]?.replace(/^\[(.*)\]$/, "$1");
    const ipHost = host !== undefined && isIP(host) !== 0 ? host : undefined;
    // Bun's TLS refuses an IP address as SNI server name, and grpc-js always
    // sends the target host as one. For an IP target the SNI name becomes
    // "localhost" while the certificate is still checked against the IP itself.
    const creds = cfg.tls
      ? grpc.credentials.createSsl(
          cfg.caFile === undefined ? null : readFileSync(cfg.caFile),
          null,
          null,
          ipHost === undefined ? {} : { checkServerIdentity: (_name, cert) => checkServerIdentity(ipHost, cert) },
        )
      : grpc.credentials.createInsecure();
    const options: grpc.ClientOptions = {
      ...(cfg.tls && ipHost !== undefined ? { "grpc.ssl_target_name_override": "localhost" } : {}),
      "grpc.max_receive_message_length": 64 * MiB,
      "grpc.max_send_message_length": 64 * MiB,
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.min_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2000,
      "grpc.enable_retries": 0,
    };
    this.cas = new ContentAddressableStorageClient(cfg.target, creds, options);
    const shared = { ...options, channelOverride: this.cas.getChannel() };
    this.ac = new ActionCacheClient(cfg.target, creds, shared);
    this.bytestream = new ByteStreamClient(cfg.target, creds, shared);
    this.execution = new ExecutionClient(cfg.target, creds, shared);
  }

  /** Metadata for one call: the bearer token, plus whatever the caller forwards. */
  metadata(extra?: grpc.Metadata): grpc.Metadata {
    const md = extra?.clone() ?? new grpc.Metadata();
    md.remove("authorization");
    if (this.token !== undefined) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  async findMissing(instance: string, digests: readonly Digest[], timeoutMs = this.timeouts.lookupMs): Promise<Digest[]> {
    const missing: Digest[] = [];
    for (const [fn, group] of byFunction(digests)) {
      for (let i = 0; i < group.length; i += FIND_MISSING_CHUNK) {
        const chunk = group.slice(i, i + FIND_MISSING_CHUNK);
        const res = await this.unary<FindMissingBlobsResponse>("FindMissingBlobs", timeoutMs, (md, o, cb) =>
          this.cas.findMissingBlobs(
            { instanceName: instance, blobDigests: chunk.map(toWire), digestFunction: fnToWire(fn) },
            md,
            o,
            cb,
          ),
        );
        for (const w of res.missingBlobDigests) missing.push(fromWire(fn, w, "upstream missing digest"));
      }
    }
    return missing;
  }

  /** Blobs the upstream returned with status OK, by digestKey; the rest are simply absent. */
  async batchRead(instance: string, digests: readonly Digest[]): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>();
    for (const [fn, group] of byFunction(digests)) {
      const bytes = group.reduce((n, d) => n + d.sizeBytes, 0);
      const res = await this.unary<BatchReadBlobsResponse>("BatchReadBlobs", this.timeouts.lookupMs + (bytes / MiB) * this.timeouts.perMiBMs, (md, o, cb) =>
        this.cas.batchReadBlobs(
          { instanceName: instance, digests: group.map(toWire), acceptableCompressors: [], digestFunction: fnToWire(fn) },
          md,
          o,
          cb,
        ),
      );
      for (const r of res.responses) {
        if ((r.status?.code ?? GrpcCode.OK) !== GrpcCode.OK || r.digest === undefined) continue;
        out.set(digestKey(fromWire(fn, r.digest, "upstream batch read digest")), r.data);
      }
    }
    return out;
  }

  /** Streams one blob from the upstream (ByteStream Read). */
  async *read(instance: string, digest: Digest): AsyncIterable<Uint8Array> {
    const deadline = this.deadline(this.timeouts.lookupMs, digest.sizeBytes);
    const stream = this.bytestream.read(
      { resourceName: formatReadResourceName(instance, digest), readOffset: 0, readLimit: 0 },
      this.metadata(),
      { deadline },
    );
    try {
      for await (const msg of stream as AsyncIterable<ReadResponse>) yield msg.data;
    } catch (err) {
      throw this.error("ByteStream Read", err);
    } finally {
      stream.cancel();
    }
  }

  /** Per-blob status codes of one BatchUpdateBlobs call, by digestKey. */
  async batchUpdate(instance: string, fn: DigestFn, blobs: readonly BlobUpload[]): Promise<Map<string, { code: number; message: string }>> {
    const bytes = blobs.reduce((n, b) => n + b.data.byteLength, 0);
    const res = await this.unary<BatchUpdateBlobsResponse>("BatchUpdateBlobs", this.timeouts.uploadMs + (bytes / MiB) * this.timeouts.perMiBMs, (md, o, cb) =>
      this.cas.batchUpdateBlobs(
        {
          instanceName: instance,
          requests: blobs.map((b) => ({ digest: toWire(b.digest), data: Buffer.from(b.data), compressor: 0 })),
          digestFunction: fnToWire(fn),
        },
        md,
        o,
        cb,
      ),
    );
    const out = new Map<string, { code: number; message: string }>();
    for (const r of res.responses) {
      if (r.digest === undefined) continue;
      out.set(digestKey(fromWire(fn, r.digest, "upstream batch update digest")), {
        code: r.status?.code ?? GrpcCode.OK,
        message: r.status?.message ?? "",
      });
    }
    return out;
  }

  /** Uploads one blob with ByteStream Write, pulling chunks from `chunks` with backpressure. */
  async write(instance: string, digest: Digest, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const resourceName = formatWriteResourceName(instance, randomUUID(), digest);
    const deadline = this.deadline(this.timeouts.uploadMs, digest.sizeBytes);
    let callError: unknown;
    let committed = -2;
    const done = new Promise<void>((resolve) => {
      const call = this.bytestream.write(this.metadata(), { deadline }, (err, res) => {
        if (err !== null) callError = err;
        else committed = res.committedSize;
        resolve();
      });
      void (async () => {
        let offset = 0;
        try {
          for await (const piece of chunks) {
            for (let at = 0; at < piece.byteLength; at += CHUNK_BYTES) {
              const data = Buffer.from(piece.subarray(at, at + CHUNK_BYTES));
              const ok = call.write({ resourceName: offset === 0 ? resourceName : "", writeOffset: offset, finishWrite: false, data });
              offset += data.byteLength;
              if (!ok) await new Promise<void>((r) => call.once("drain", () => r()));
            }
          }
          call.write({ resourceName: offset === 0 ? resourceName : "", writeOffset: offset, finishWrite: true, data: Buffer.alloc(0) });
          call.end();
        } catch (err) {
          callError ??= err;
          call.cancel();
        }
      })();
    });
    await done;
    if (callError !== undefined) throw this.error("ByteStream Write", callError);
    if (committed !== digest.sizeBytes && committed !== -1) {
      throw new RpcError(GrpcCode.INTERNAL, `upstream ${this.url} committed ${committed} bytes of ${formatDigest(digest)}, expected ${digest.sizeBytes}`);
    }
  }

  /** The upstream's result, or undefined when it has none (NOT_FOUND). */
  async getActionResult(instance: string, action: Digest): Promise<ActionResult | undefined> {
    try {
      return await this.unary<ActionResult>("GetActionResult", this.timeouts.lookupMs, (md, o, cb) =>
        this.ac.getActionResult(
          {
            instanceName: instance,
            actionDigest: toWire(action),
            inlineStdout: false,
            inlineStderr: false,
            inlineOutputFiles: [],
            digestFunction: fnToWire(action.fn),
          },
          md,
          o,
          cb,
        ),
      );
    } catch (err) {
      if (err instanceof RpcError && err.code === GrpcCode.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async updateActionResult(instance: string, action: Digest, result: ActionResult): Promise<void> {
    await this.unary("UpdateActionResult", this.timeouts.uploadMs, (md, o, cb) =>
      this.ac.updateActionResult(
        {
          instanceName: instance,
          actionDigest: toWire(action),
          actionResult: ActionResult.fromPartial(result),
          resultsCachePolicy: undefined,
          digestFunction: fnToWire(action.fn),
        },
        md,
        o,
        cb,
      ),
    );
  }

  /** Starts an Execute stream; no deadline (actions take as long as they take). */
  execute(req: ExecuteRequest, md?: grpc.Metadata): grpc.ClientReadableStream<Operation> {
    return this.execution.execute(req, this.metadata(md), {});
  }

  waitExecution(name: string, md?: grpc.Metadata): grpc.ClientReadableStream<Operation> {
    return this.execution.waitExecution({ name }, this.metadata(md), {});
  }

  close(): void {
    this.cas.close();
  }

  /** An RpcError with the upstream's code and a message naming it and the call. */
  error(method: string, err: unknown): RpcError {
    if (err instanceof RpcError) return err;
    const e = err as Partial<grpc.ServiceError>;
    const code = typeof e.code === "number" ? e.code : GrpcCode.UNAVAILABLE;
    const detail = e.details ?? (err instanceof Error ? err.message : String(err));
    const missing = code === GrpcCode.FAILED_PRECONDITION ? missingBlobsOf(e.metadata) : [];
    return new RpcError(code, `upstream ${this.url} ${method}: ${detail}`, { cause: err, missing });
  }

  private deadline(baseMs: number, bytes: number): Date {
    return new Date(Date.now() + baseMs + (bytes / MiB) * this.timeouts.perMiBMs);
  }

  private unary<Res>(
    method: string,
    timeoutMs: number,
    start: (md: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      start(this.metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (err, res) =>
        err === null ? resolve(res) : reject(this.error(method, err)),
      );
    });
  }
}

/**
 * The MISSING violations of an upstream FAILED_PRECONDITION, so a forwarded
 * Execute hands the client the blob list Bazel re-uploads before retrying.
 */
function missingBlobsOf(metadata: grpc.Metadata | undefined): MissingBlob[] {
  const out: MissingBlob[] = [];
  try {
    for (const d of statusFromMetadata(metadata)?.details ?? []) {
      if (d.typeUrl !== PRECONDITION_FAILURE_TYPE_URL) continue;
      for (const v of PreconditionFailure.decode(d.value).violations) {
        if (v.type === "MISSING") out.push({ subject: v.subject });
      }
    }
  } catch {
    // Undecodable details from the upstream: the code and message still go through.
  }
  return out;
}

function readToken(path: string): string {
  const token = readFileSync(path, "utf8").trim();
  if (token === "" || /\s/.test(token)) {
    throw new RangeError(`token file "${path}" must hold one token without spaces`);
  }
  return token;
}

function byFunction(digests: readonly Digest[]): Map<DigestFn, Digest[]> {
  const out = new Map<DigestFn, Digest[]>();
  for (const d of digests) {
    const group = out.get(d.fn);
    if (group === undefined) out.set(d.fn, [d]);
    else group.push(d);
  }
  return out;
}
