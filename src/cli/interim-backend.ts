/**
 * INTERIM stand-in for src/storage and src/grpc while they are written in
 * parallel: an in-memory CAS behind the batch CAS RPCs and GetCapabilities,
 * plus an LMDB environment in the data dir, so the CLI's socket, signal and
 * single-binary paths can be exercised end to end today. Deleted once
 * openStorage and startServer land.
 */
import * as grpc from "@grpc/grpc-js";
import { join } from "node:path";
import { open } from "lmdb";
import { MemoryActionCache } from "../ac/memory-action-cache";
import { MemoryBlobStore } from "../cas/memory-blob-store";
import { fnFromWire, fnToWire, fromWire, toWire } from "../digest/digest";
import { isRpcError } from "../errors";
import {
  CapabilitiesService,
  ContentAddressableStorageService,
  type BatchReadBlobsRequest,
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsRequest,
  type BatchUpdateBlobsResponse,
  type FindMissingBlobsRequest,
  type FindMissingBlobsResponse,
  type GetCapabilitiesRequest,
  type ServerCapabilities,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Backend, RunningServer, ServerConfig, Storage, StorageOptions } from "./contracts";

async function openStorage(o: StorageOptions): Promise<Storage> {
  const cas = new MemoryBlobStore();
  const ac = new MemoryActionCache();
  const db = open<number, string>({ path: join(o.dataDir, "interim-lmdb") });
  let hits = 0;
  let misses = 0;
  return {
    cas,
    ac,
    async stats() {
      let blobs = 0;
      let bytes = 0;
      for await (const b of cas.list()) {
        blobs++;
        bytes += b.digest.sizeBytes;
      }
      await db.put("opened", (db.get("opened") ?? 0) + 1);
      return { blobs, bytes, maxBytes: o.maxBytes, acEntries: 0, acFromSandbox: 0, acFromClients: 0, acHits: hits, acMisses: misses };
    },
    async gc(targetBytes) {
      const all = [];
      for await (const b of cas.list()) all.push(b);
      all.sort((a, b) => a.lastUsedMs - b.lastUsedMs);
      let bytes = all.reduce((n, b) => n + b.digest.sizeBytes, 0);
      let evictedBlobs = 0;
      let evictedBytes = 0;
      for (const b of all) {
        if (bytes <= targetBytes) break;
        await cas.delete([b.digest]);
        bytes -= b.digest.sizeBytes;
        evictedBlobs++;
        evictedBytes += b.digest.sizeBytes;
      }
      return { evictedBlobs, evictedBytes, bytesAfter: bytes };
    },
    recordAcLookup(hit) {
      if (hit) hits++;
      else misses++;
    },
    async close() {
      await cas.close();
      await ac.close();
      await db.close();
    },
  };
}

function unary<Req, Res>(fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request).then(
      (res) => callback(null, res),
      (err: unknown) => callback({ code: isRpcError(err) ? err.code : grpc.status.INTERNAL, details: String(err) }),
    );
  };
}

async function startServer(c: ServerConfig): Promise<RunningServer> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  const fnOf = (instance: string, wire: number) =>
    fnFromWire(wire, c.digests.instanceDigestFn?.[instance] ?? c.digests.defaultDigestFn);
  server.addService(ContentAddressableStorageService, {
    findMissingBlobs: unary<FindMissingBlobsRequest, FindMissingBlobsResponse>(async (req) => {
      const fn = fnOf(req.instanceName, req.digestFunction);
      const missing = await c.cas.findMissing(req.blobDigests.map((d) => fromWire(fn, d)));
      return { missingBlobDigests: missing.map(toWire) };
    }),
    batchUpdateBlobs: unary<BatchUpdateBlobsRequest, BatchUpdateBlobsResponse>(async (req) => {
      const fn = fnOf(req.instanceName, req.digestFunction);
      const responses = [];
      for (const r of req.requests) {
        try {
          await c.cas.put(fromWire(fn, r.digest), r.data);
          responses.push({ digest: r.digest, status: { code: 0, message: "", details: [] } });
        } catch (err) {
          const code = isRpcError(err) ? err.code : grpc.status.INTERNAL;
          responses.push({ digest: r.digest, status: { code, message: String(err), details: [] } });
        }
      }
      return { responses };
    }),
    batchReadBlobs: unary<BatchReadBlobsRequest, BatchReadBlobsResponse>(async (req) => {
      const fn = fnOf(req.instanceName, req.digestFunction);
      const responses = [];
      for (const d of req.digests) {
        try {
          const data = await c.cas.get(fromWire(fn, d));
          responses.push({ digest: d, data: Buffer.from(data), status: { code: 0, message: "", details: [] }, compressor: 0 });
        } catch (err) {
          const code = isRpcError(err) ? err.code : grpc.status.INTERNAL;
          responses.push({ digest: d, data: Buffer.alloc(0), status: { code, message: String(err), details: [] }, compressor: 0 });
        }
      }
      return { responses };
    }),
    getTree: (call: grpc.ServerWritableStream<unknown, unknown>) => call.destroy(new Error("GetTree is not implemented yet")),
    splitBlob: unary(async () => Promise.reject(new Error("unimplemented"))),
    spliceBlob: unary(async () => Promise.reject(new Error("unimplemented"))),
  });
  server.addService(CapabilitiesService, {
    getCapabilities: unary<GetCapabilitiesRequest, ServerCapabilities>(async () => ({
      cacheCapabilities: {
        digestFunctions: [fnToWire("sha256"), fnToWire("blake3")],
        actionCacheUpdateCapabilities: { updateEnabled: true },
        cachePriorityCapabilities: undefined,
        maxBatchTotalSizeBytes: 4_000_000,
        symlinkAbsolutePathStrategy: 0,
        supportedCompressors: [],
        supportedBatchUpdateCompressors: [],
        maxCasBlobSizeBytes: 0,
      },
      executionCapabilities: undefined,
      deprecatedApiVersion: { major: 2, minor: 0, patch: 0, prerelease: "" },
      lowApiVersion: { major: 2, minor: 0, patch: 0, prerelease: "" },
      highApiVersion: { major: 2, minor: 0, patch: 0, prerelease: "" },
    })),
  });
  const bind = (address: string) =>
    new Promise<number>((resolve, reject) =>
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
  const running: { socketPath?: string; tcpAddress?: string } = {};
  if (c.listen.socketPath !== undefined) {
    await bind(`unix:${c.listen.socketPath}`);
    running.socketPath = c.listen.socketPath;
  }
  if (c.listen.tcp !== undefined) {
    const { host, port } = c.listen.tcp;
    const bracketed = host.includes(":") ? `[${host}]` : host;
    const actual = await bind(`${bracketed}:${port}`);
    running.tcpAddress = `${bracketed}:${actual}`;
  }
  return {
    ...running,
    shutdown: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

export const interimBackend: Backend = { openStorage, startServer };
