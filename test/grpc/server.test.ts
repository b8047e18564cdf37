import { describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { formatWriteResourceName } from "../../src/digest/resource-name";
import { type ServerConfig, startServer } from "../../src/grpc/server";
import { WriteRequest } from "../../src/proto/google/bytestream/bytestream";
import { createClients, grpc, rpcError } from "../support/grpc-client";
import { blob, bytes, startTestServer } from "./harness";

const base = (): Omit<ServerConfig, "listen"> => ({
  cas: new MemoryBlobStore(),
  ac: new MemoryActionCache(),
  digests: { defaultDigestFn: "sha256" },
  execEnabled: false,
});

describe("startServer", () => {
  test("listens on a Unix socket and TCP at once, reporting the port it really bound", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lre-srv-"));
    const server = await startServer({ ...base(), listen: { socketPath: join(dir, "s.sock"), tcp: { host: "127.0.0.1", port: 0 } } });
    try {
      expect(server.socketPath).toBe(join(dir, "s.sock"));
      expect(server.tcpAddress).toMatch(/^127\.0\.0\.1:[1-9][0-9]*$/);
      for (const address of [server.socketPath as string, server.tcpAddress as string]) {
        const c = createClients(address);
        expect((await c.getCapabilities({})).cacheCapabilities).toBeDefined();
        c.close();
      }
    } finally {
      await server.shutdown(100);
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("refuses a config without any listener, and reports a port that is taken", async () => {
    await expect(startServer({ ...base(), listen: {} })).rejects.toThrow(TypeError);
    const first = await startServer({ ...base(), listen: { tcp: { host: "127.0.0.1", port: 0 } } });
    try {
      const port = Number(first.tcpAddress?.split(":")[1]);
      await expect(startServer({ ...base(), listen: { tcp: { host: "127.0.0.1", port } } })).rejects.toThrow(/cannot listen/);
    } finally {
      await first.shutdown(100);
    }
  });

  test("shutdown waits for running calls up to the grace period, then cuts them off", async () => {
    const s = await startTestServer();
    const b = blob(bytes(100_000, 5));
    // An upload that never finishes: only the forced shutdown can end it.
    const stuck = new Promise<grpc.ServiceError | null>((resolve) => {
      const call = s.clients.bytestream.write((err) => resolve(err));
      call.write(
        WriteRequest.fromPartial({
          resourceName: formatWriteResourceName("", "stuck", b.digest),
          writeOffset: 0,
          data: b.data.subarray(0, 10),
        }),
      );
    });
    await Bun.sleep(50);
    const started = Date.now();
    await s.server.shutdown(300);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(5000);
    expect((await stuck)?.code).toBeDefined();
    // Idempotent.
    await s.server.shutdown(300);
    const err = await rpcError(s.clients.getCapabilities({}, undefined));
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    await s.stop();
  });

  test("GetActionResult reports each lookup to onAcLookup, and a missing inlined blob is a miss", async () => {
    const seen: boolean[] = [];
    const s = await startTestServer({ onAcLookup: (hit) => seen.push(hit) });
    try {
      const action = blob("counted action");
      const stdout = blob("stdout that was never uploaded");
      await s.clients.updateActionResult({ actionDigest: action.wire, actionResult: { exitCode: 0, stdoutDigest: stdout.wire } });
      await s.clients.getActionResult({ actionDigest: action.wire });
      expect((await rpcError(s.clients.getActionResult({ actionDigest: blob("unknown").wire }))).code).toBe(grpc.status.NOT_FOUND);
      const inlineMiss = await rpcError(s.clients.getActionResult({ actionDigest: action.wire, inlineStdout: true }));
      expect(inlineMiss.code).toBe(grpc.status.NOT_FOUND);
      expect(seen).toEqual([true, false, false]);
    } finally {
      await s.stop();
    }
  });
});
