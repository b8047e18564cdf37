import type { BlobStore } from "../cas/blob-store";
import { zstdCompress, zstdDecompressBounded } from "../compression/zstd";
import { type Digest, type DigestFn, digestKey, fromWire, isEmptyDigest, toWire, uniqueNonEmptyDigests } from "../digest/digest";
import { type DigestConfig, parseInstanceName, requestDigestFn } from "../digest/instance-name";
import { GrpcCode, RpcError } from "../errors";
import {
  type BatchReadBlobsRequest,
  type BatchReadBlobsResponse,
  type BatchReadBlobsResponse_Response,
  type BatchUpdateBlobsRequest,
  type BatchUpdateBlobsResponse,
  type BatchUpdateBlobsResponse_Response,
  Compressor_Value,
  ContentAddressableStorageService,
  Directory,
  type FindMissingBlobsRequest,
  type FindMissingBlobsResponse,
  type GetTreeRequest,
  type GetTreeResponse,
  type Digest as WireDigest,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Status } from "../proto/google/rpc/status";
import { MAX_BATCH_TOTAL_SIZE_BYTES } from "./capabilities-service";
import { decodeFindMissingBlobsRequest, encodeFindMissingBlobsResponse } from "./cas-codec";
import type { ServiceEntry } from "./service-entry";
import { serverStreamHandler, toRpcError, unaryHandler, writeMessage } from "./status";

export interface CasServiceOptions {
  readonly cas: BlobStore;
  readonly digests: DigestConfig;
  /** Batch limit enforced on BatchUpdate/BatchRead; must equal what GetCapabilities advertises. */
  readonly maxBatchTotalSizeBytes?: number;
}

/** Server's own cap on GetTree pages, whatever page_size the client asks for. */
const MAX_TREE_PAGE_DIRECTORIES = 1000;
/** Keeps each GetTree message well under the 4 MiB a default client accepts. */
const MAX_TREE_PAGE_BYTES = 2 * 1024 * 1024;

const OK_STATUS: Status = { code: GrpcCode.OK, message: "", details: [] };

/** The generated service, with faster FindMissingBlobs codecs (cas-codec.ts). */
const CAS_DEFINITION = {
  ...ContentAddressableStorageService,
  findMissingBlobs: {
    ...ContentAddressableStorageService.findMissingBlobs,
    requestDeserialize: decodeFindMissingBlobsRequest,
    responseSerialize: encodeFindMissingBlobsResponse,
  },
} as const;

export function createCasService(options: CasServiceOptions): ServiceEntry {
  const { cas, digests } = options;
  const maxBatch = options.maxBatchTotalSizeBytes ?? MAX_BATCH_TOTAL_SIZE_BYTES;

  const requestContext = (instanceName: string, wireFn: BatchReadBlobsRequest["digestFunction"]) => {
    const instance = parseInstanceName(instanceName);
    return { instance, fn: requestDigestFn(digests, instance, wireFn) };
  };

  return {
    definition: CAS_DEFINITION,
    implementation: {
      findMissingBlobs: unaryHandler<FindMissingBlobsRequest, FindMissingBlobsResponse>("FindMissingBlobs", async (req) => {
        const { fn } = requestContext(req.instanceName, req.digestFunction);
        // The empty blob is always present (REAPI), whether or not a store holds it.
        const unique = uniqueNonEmptyDigests(fn, req.blobDigests, "blob_digests");
        const missing = unique.length === 0 ? [] : await cas.findMissing(unique);
        return { missingBlobDigests: missing.map(toWire) };
      }),

      batchUpdateBlobs: unaryHandler<BatchUpdateBlobsRequest, BatchUpdateBlobsResponse>("BatchUpdateBlobs", async (req) => {
        const { fn } = requestContext(req.instanceName, req.digestFunction);
        let sent = 0;
        let declared = 0;
        for (const r of req.requests) {
          sent += r.data.byteLength;
          declared += Math.max(0, r.digest?.sizeBytes ?? 0);
        }
        // Both counts: a compressed blob must not expand past the limit either.
        if (sent > maxBatch || declared > maxBatch) {
          throw RpcError.invalidArgument(
            `batch carries ${Math.max(sent, declared)} bytes, over max_batch_total_size_bytes ${maxBatch}; split it into smaller batches or upload with ByteStream Write`,
          );
        }
        const responses = await Promise.all(
          req.requests.map(async (r, i): Promise<BatchUpdateBlobsResponse_Response> => {
            const digest = echoDigest(r.digest);
            try {
              const d = fromWire(fn, r.digest, `requests[${i}].digest`);
              const data = await decodeBatchData(r.compressor, r.data, d);
              if (!(isEmptyDigest(d) && data.byteLength === 0)) await cas.put(d, data);
              return { digest, status: OK_STATUS };
            } catch (err) {
              return { digest, status: statusOf(err, "BatchUpdateBlobs") };
            }
          }),
        );
        return { responses };
      }),

      batchReadBlobs: unaryHandler<BatchReadBlobsRequest, BatchReadBlobsResponse>("BatchReadBlobs", async (req) => {
        const { fn } = requestContext(req.instanceName, req.digestFunction);
        const parsed = req.digests.map((w, i) => {
          try {
            return fromWire(fn, w, `digests[${i}]`);
          } catch (err) {
            return toRpcError(err, "BatchReadBlobs");
          }
        });
        const total = parsed.reduce((n, d) => n + (d instanceof RpcError ? 0 : d.sizeBytes), 0);
        if (total > maxBatch) {
          throw RpcError.invalidArgument(
            `batch asks for ${total} bytes, over max_batch_total_size_bytes ${maxBatch}; request fewer blobs per batch or read large ones with ByteStream Read`,
          );
        }
        const zstdOk = req.acceptableCompressors.includes(Compressor_Value.ZSTD);
        const responses = await Promise.all(
          parsed.map(async (d, i): Promise<BatchReadBlobsResponse_Response> => {
            const digest = echoDigest(req.digests[i]);
            const base = { digest, data: Buffer.alloc(0), compressor: Compressor_Value.IDENTITY };
            if (d instanceof RpcError) return { ...base, status: statusOf(d, "BatchReadBlobs") };
            try {
              if (isEmptyDigest(d)) return { ...base, status: OK_STATUS };
              const data = toBuffer(await cas.get(d));
              if (zstdOk) {
                const packed = await zstdCompress(data);
                // IDENTITY is always acceptable, so only pay for zstd when it actually saves bytes.
                if (packed.byteLength < data.byteLength) {
                  return { digest, data: packed, compressor: Compressor_Value.ZSTD, status: OK_STATUS };
                }
              }
              return { ...base, data, status: OK_STATUS };
            } catch (err) {
              return { ...base, status: statusOf(err, "BatchReadBlobs") };
            }
          }),
        );
        return { responses };
      }),

      getTree: serverStreamHandler<GetTreeRequest, GetTreeResponse>("GetTree", async (req, call) => {
        const { fn } = requestContext(req.instanceName, req.digestFunction);
        const root = fromWire(fn, req.rootDigest, "root_digest");
        if (!Number.isInteger(req.pageSize) || req.pageSize < 0) {
          throw RpcError.invalidArgument(`page_size ${req.pageSize} is negative; use 0 for the server's default`);
        }
        const pageSize = req.pageSize === 0 ? MAX_TREE_PAGE_DIRECTORIES : Math.min(req.pageSize, MAX_TREE_PAGE_DIRECTORIES);
        const start = parsePageToken(req.pageToken);

        let page: Directory[] = [];
        let pageBytes = 0;
        let index = 0;
        for await (const dir of walkTree(cas, fn, root)) {
          if (index++ < start) continue;
          page.push(dir.directory);
          pageBytes += dir.encodedBytes;
          if (page.length >= pageSize || pageBytes >= MAX_TREE_PAGE_BYTES) {
            await writeMessage(call, { directories: page, nextPageToken: pageToken(index) });
            page = [];
            pageBytes = 0;
          }
        }
        if (index < start) {
          throw RpcError.invalidArgument(`page_token points past the end of the tree (${index} directories); restart without a token`);
        }
        // The last page says "no more" with an empty token, even when it holds nothing new.
        await writeMessage(call, { directories: page, nextPageToken: "" });
      }),
    },
  };
}

async function decodeBatchData(compressor: Compressor_Value, data: Buffer, d: Digest): Promise<Uint8Array> {
  switch (compressor) {
    case Compressor_Value.IDENTITY:
      return data;
    case Compressor_Value.ZSTD:
      return zstdDecompressBounded(data, d.sizeBytes);
    default:
      throw RpcError.invalidArgument(
        `compressor ${Compressor_Value[compressor] ?? compressor} is not supported for batch uploads; send IDENTITY or ZSTD`,
      );
  }
}

interface TreeEntry {
  readonly directory: Directory;
  readonly encodedBytes: number;
}

/**
 * Breadth-first walk of a Directory tree, each distinct directory once. The
 * root must exist; REAPI lets the server omit missing or unreadable subtrees,
 * so those are skipped rather than failing the whole call.
 */
async function* walkTree(cas: BlobStore, fn: DigestFn, root: Digest): AsyncGenerator<TreeEntry> {
  const seen = new Set<string>([digestKey(root)]);
  // Visited slots are cleared so a huge tree does not pin every digest until the walk ends.
  const queue: (Digest | undefined)[] = [root];
  for (let i = 0; i < queue.length; i++) {
    const d = queue[i];
    queue[i] = undefined;
    if (d === undefined) continue;
    let directory: Directory;
    let encodedBytes: number;
    try {
      const bytes = isEmptyDigest(d) ? new Uint8Array(0) : await cas.get(d);
      directory = Directory.decode(bytes);
      encodedBytes = bytes.byteLength;
    } catch (err) {
      if (i === 0) {
        if (err instanceof RpcError) throw err;
        throw RpcError.invalidArgument(`root_digest does not name a Directory message: ${String(err)}`);
      }
      continue;
    }
    for (const child of directory.directories) {
      let cd: Digest;
      try {
        cd = fromWire(fn, child.digest, "directory digest");
      } catch {
        continue;
      }
      const key = digestKey(cd);
      if (!seen.has(key)) {
        seen.add(key);
        queue.push(cd);
      }
    }
    yield { directory, encodedBytes };
  }
}

const TOKEN_PREFIX = "lre-tree-v1:";

function pageToken(offset: number): string {
  return Buffer.from(`${TOKEN_PREFIX}${offset}`).toString("base64url");
}

function parsePageToken(token: string): number {
  if (token === "") return 0;
  const text = Buffer.from(token, "base64url").toString();
  const n = text.startsWith(TOKEN_PREFIX) ? Number(text.slice(TOKEN_PREFIX.length)) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 0) {
    throw RpcError.invalidArgument("page_token is not one this server issued; pass the next_page_token of a previous GetTree reply");
  }
  return n;
}

function statusOf(err: unknown, method: string): Status {
  const rpc = toRpcError(err, method);
  return { code: rpc.code, message: rpc.message, details: [] };
}

function echoDigest(d: WireDigest | undefined): WireDigest {
  return d === undefined ? { hash: "", sizeBytes: 0 } : { hash: d.hash, sizeBytes: d.sizeBytes };
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
