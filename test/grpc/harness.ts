import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ActionCache } from "../../src/ac/action-cache";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import type { BlobStore } from "../../src/cas/blob-store";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import type { Digest, DigestFn } from "../../src/digest/digest";
import { toWire } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import type { DigestConfig } from "../../src/digest/instance-name";
import { type RunningServer, type ServerConfig, startServer } from "../../src/grpc/server";
import type { Digest as WireDigest } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { type ReapiClients, createClients } from "../support/grpc-client";

export type Transport = "unix" | "tcp";
export const TRANSPORTS: readonly Transport[] = ["unix", "tcp"];

export interface TestServer {
  readonly server: RunningServer;
  readonly clients: ReapiClients;
  readonly cas: BlobStore;
  readonly ac: ActionCache;
  /** The address clients were created for: a socket path or host:port. */
  readonly address: string;
  /** A further, independent client connection (a second Bazel, say). */
  connect(): ReapiClients;
  stop(): Promise<void>;
}

export interface TestServerOptions {
  transport?: Transport;
  digests?: DigestConfig;
  execEnabled?: boolean;
  cas?: BlobStore;
  ac?: ActionCache;
  uploadIdleMs?: number;
  onAcLookup?: (hit: boolean) => void;
  extraServices?: ServerConfig["extraServices"];
}

/** A real server on a fresh Unix socket (or 127.0.0.1 port 0) with real grpc-js clients. */
export async function startTestServer(o: TestServerOptions = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), "lre-grpc-"));
  const cas = o.cas ?? new MemoryBlobStore();
  const ac = o.ac ?? new MemoryActionCache();
  const transport = o.transport ?? "unix";
  const server = await startServer({
    cas,
    ac,
    digests: o.digests ?? { defaultDigestFn: "sha256" },
    execEnabled: o.execEnabled ?? false,
    ...(o.onAcLookup === undefined ? {} : { onAcLookup: o.onAcLookup }),
    ...(o.extraServices === undefined ? {} : { extraServices: o.extraServices }),
    ...(o.uploadIdleMs === undefined ? {} : { uploadIdleMs: o.uploadIdleMs }),
    listen: transport === "unix" ? { socketPath: join(dir, "lre.sock") } : { tcp: { host: "127.0.0.1", port: 0 } },
  });
  const address = transport === "unix" ? (server.socketPath as string) : (server.tcpAddress as string);
  const opened: ReapiClients[] = [];
  const connect = () => {
    const c = createClients(address);
    opened.push(c);
    return c;
  };
  const clients = connect();
  return {
    server,
    clients,
    cas,
    ac,
    address,
    connect,
    stop: async () => {
      for (const c of opened) c.close();
      await server.shutdown(1000);
      if (o.cas === undefined) await cas.close();
      if (o.ac === undefined) await ac.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestBlob {
  readonly data: Buffer;
  readonly digest: Digest;
  readonly wire: WireDigest;
}

export function blob(content: string | Uint8Array, fn: DigestFn = "sha256"): TestBlob {
  const data = typeof content === "string" ? Buffer.from(content) : Buffer.from(content);
  const digest = digestOf(fn, data);
  return { data, digest, wire: toWire(digest) };
}

/** Deterministic pseudo-random bytes: compressible enough to exercise zstd, varied enough to be real. */
export function bytes(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) % 16 === 0 ? x & 0xff : 97 + (i % 7);
  }
  return out;
}
