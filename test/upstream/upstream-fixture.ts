/**
 * An upstream for in-process tests of the --upstream decorators: a real lre
 * gRPC server on a Unix socket over an in-memory CAS, and a local store in a
 * fresh data dir opened as `lre serve` opens it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import type { Clock } from "../../src/clock";
import { type Storage, openStorage } from "../../src/storage/open-storage";
import type { UpstreamConfig } from "../../src/upstream/upstream-config";
import { type TestServer, startTestServer } from "../grpc/harness";

export interface Upstream {
  /** As `lre serve --upstream unix:///PATH` would have it. */
  readonly config: UpstreamConfig;
  readonly server: TestServer;
}

export interface FrontFixture {
  readonly upstream: Upstream;
  readonly dataDir: string;
  /** The local store, with the verifying stack lre serve puts below the upstream layers. */
  readonly storage: Storage;
}

/** Everything is released through `defer`: the local store, then the upstream. */
export async function startFront(clock: Clock, defer: (release: () => Promise<void>) => void): Promise<FrontFixture> {
  const server = await startTestServer({ cas: new MemoryBlobStore() });
  defer(() => server.stop());
  const config: UpstreamConfig = { url: `unix://${server.address}`, target: `unix://${server.address}`, tls: false, execute: "never" };
  const root = await mkdtemp(join(tmpdir(), "lre-front-"));
  defer(() => rm(root, { recursive: true, force: true }));
  const dataDir = join(root, "data");
  const storage = await openStorage({ dataDir, maxBytes: 1 << 30, clock, inlineMaxBytes: 4096 });
  defer(() => storage.close());
  return { upstream: { config, server }, dataDir, storage };
}
