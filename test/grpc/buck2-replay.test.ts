import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as zlib from "node:zlib";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode } from "../../src/errors";
import {
  Action,
  Compressor_Value,
  type Digest as WireDigest,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { createClients, grpc } from "../support/grpc-client";
import { type TestBlob, type TestServer, blob, bytes, startTestServer } from "./harness";

/**
 * Buck2 OSS as a client, replayed request by request over TCP (it cannot use
 * Unix sockets). Buck2 never sends digest_function, uses zstd for every
 * ByteStream transfer once it is advertised, treats any non-OK per-blob batch
 * status as fatal, and probes UpdateActionResult permission with an empty
 * result (reapi-clients.md §6).
 */
for (const instance of ["", "buck2/blake3"]) {
  const fn = instance === "" ? "sha256" : "blake3";
  describe(`Buck2 replay over TCP, instance "${instance}" (${fn} by instance binding)`, () => {
    let s: TestServer;
    beforeAll(async () => {
      s = await startTestServer({
        transport: "tcp",
        execEnabled: true,
        digests: { defaultDigestFn: "sha256", instanceDigestFn: { "buck2/blake3": "blake3" } },
      });
    });
    afterAll(async () => {
      await s.stop();
    });

    test("a build's uploads and downloads", async () => {
      // 1. Capabilities: only the compressors and the batch limit matter to Buck2.
      const caps = await s.clients.getCapabilities({ instanceName: instance });
      const zstd = caps.cacheCapabilities?.supportedCompressors.includes(Compressor_Value.ZSTD) ?? false;
      expect(zstd).toBe(true);
      const maxBatch = caps.cacheCapabilities?.maxBatchTotalSizeBytes || 4_000_000;

      // 2. FindMissingBlobs in batches of 100, without digest_function.
      const small: TestBlob[] = Array.from({ length: 250 }, (_, i) => blob(`input file ${i} of ${instance}`, fn));
      const large = blob(bytes(3 * 1024 * 1024, instance.length + 5), fn);
      const all = [...small, large];
      const missing: WireDigest[] = [];
      for (let i = 0; i < all.length; i += 100) {
        const r = await s.clients.findMissingBlobs({ instanceName: instance, blobDigests: all.slice(i, i + 100).map((b) => b.wire) });
        missing.push(...r.missingBlobDigests);
      }
      expect(missing.length).toBe(all.length);

      // 3. Small blobs through BatchUpdateBlobs, packed up to the advertised limit.
      const uploadable = small.filter((b) => b.data.byteLength < maxBatch);
      const statuses: number[] = [];
      for (let i = 0; i < uploadable.length; i += 120) {
        const r = await s.clients.batchUpdateBlobs({
          instanceName: instance,
          requests: uploadable.slice(i, i + 120).map((b) => ({ digest: b.wire, data: b.data, compressor: Compressor_Value.IDENTITY })),
        });
        statuses.push(...r.responses.map((x) => x.status?.code ?? -1));
      }
      expect(statuses.every((c) => c === GrpcCode.OK)).toBe(true);

      // 4. The large blob through ByteStream compressed-blobs/zstd; committed_size is the compressed count (or -1).
      const packed = zlib.zstdCompressSync(large.data);
      const w = await s.clients.writeBlob(formatWriteResourceName(instance, crypto.randomUUID(), large.digest, "zstd"), packed, {
        chunkBytes: 1024 * 1024,
      });
      expect([packed.byteLength, -1]).toContain(w.committedSize);

      // 5. Nothing missing any more.
      const again = await s.clients.findMissingBlobs({ instanceName: instance, blobDigests: all.slice(0, 100).map((b) => b.wire) });
      expect(again.missingBlobDigests).toEqual([]);

      // 6. Downloads: BatchRead with IDENTITY only (any non-OK would fail the build), large blobs by compressed Read from 0.
      const read = await s.clients.batchReadBlobs({
        instanceName: instance,
        digests: small.slice(0, 100).map((b) => b.wire),
        acceptableCompressors: [Compressor_Value.IDENTITY],
      });
      expect(read.responses.every((r) => r.status?.code === GrpcCode.OK && r.compressor === Compressor_Value.IDENTITY)).toBe(true);
      expect(read.responses.map((r) => Buffer.from(r.data).toString())).toEqual(small.slice(0, 100).map((b) => b.data.toString()));

      const big = await s.clients.read({ resourceName: formatReadResourceName(instance, large.digest, "zstd"), readOffset: 0 });
      expect(zlib.zstdDecompressSync(big.data).equals(large.data)).toBe(true);
    });

    test("the UpdateActionResult permission probe (empty result, Action without input root) succeeds", async () => {
      const probeAction = Action.fromPartial({ commandDigest: blob("probe command", fn).wire, doNotCache: false });
      expect(probeAction.inputRootDigest).toBeUndefined();
      const actionBlob = blob(Buffer.from(Action.encode(probeAction).finish()), fn);
      await s.clients.batchUpdateBlobs({ instanceName: instance, requests: [{ digest: actionBlob.wire, data: actionBlob.data }] });
      const stored = await s.clients.updateActionResult({ instanceName: instance, actionDigest: actionBlob.wire, actionResult: {} });
      expect(stored.exitCode).toBe(0);
      // Without any result message at all the probe is still fine.
      await s.clients.updateActionResult({ instanceName: instance, actionDigest: actionBlob.wire });
    });

    test("HTTP/2 keepalive pings on an idle connection never get it closed", async () => {
      // Buck2 pings every 30 s even when idle; here every 100 ms to make the point quickly.
      const c = createClients(s.address, {
        "grpc.keepalive_time_ms": 100,
        "grpc.keepalive_timeout_ms": 1000,
        "grpc.keepalive_permit_without_calls": 1,
      });
      try {
        await c.getCapabilities({ instanceName: instance });
        const channel = c.capabilities.getChannel();
        await Bun.sleep(1500);
        expect(channel.getConnectivityState(false)).toBe(grpc.connectivityState.READY);
        await c.findMissingBlobs({ instanceName: instance, blobDigests: [] });
        expect(channel.getConnectivityState(false)).toBe(grpc.connectivityState.READY);
      } finally {
        c.close();
      }
    });
  });
}
