/**
 * INTERIM: the storage and gRPC modules are being written in parallel. These
 * types copy their agreed signatures (src/storage/open-storage.ts,
 * src/grpc/server.ts) so the CLI is wired against them today; once those
 * modules land this file becomes re-exports and interim-backend.ts goes away.
 */
import type { UntypedServiceImplementation, ServiceDefinition } from "@grpc/grpc-js";
import type { ActionCache } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import type { Clock } from "../clock";
import type { DigestFn } from "../digest/digest";

export interface StorageOptions {
  dataDir: string;
  maxBytes: number;
  protectMs?: number;
  clock?: Clock;
  inlineMaxBytes?: number;
}
export interface StorageStats {
  blobs: number;
  bytes: number;
  maxBytes: number;
  acEntries: number;
  acFromSandbox: number;
  acFromClients: number;
  acHits: number;
  acMisses: number;
}
export interface Storage {
  cas: BlobStore;
  ac: ActionCache;
  stats(): Promise<StorageStats>;
  gc(targetBytes: number): Promise<{ evictedBlobs: number; evictedBytes: number; bytesAfter: number }>;
  recordAcLookup(hit: boolean): void;
  close(): Promise<void>;
}

export interface ServiceEntry {
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
}
export interface ServerConfig {
  cas: BlobStore;
  ac: ActionCache;
  digests: { defaultDigestFn: DigestFn; instanceDigestFn?: Record<string, DigestFn> };
  execEnabled: boolean;
  onAcLookup?: (hit: boolean) => void;
  extraServices?: ServiceEntry[];
  listen: { socketPath?: string; tcp?: { host: string; port: number } };
}
export interface RunningServer {
  socketPath?: string;
  tcpAddress?: string;
  shutdown(graceMs: number): Promise<void>;
}

/** What the CLI needs from the rest of lre. */
export interface Backend {
  openStorage(o: StorageOptions): Promise<Storage>;
  startServer(c: ServerConfig): Promise<RunningServer>;
}
