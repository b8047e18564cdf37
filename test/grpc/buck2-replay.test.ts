import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import type { DigestFn } from "../../src/digest/digest";
import type { DigestConfig } from "../../src/digest/instance-name";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode } from "../../src/errors";
import { createLocalExecution } from "../../src/exec/local-execution";
import { EXECUTE_RESPONSE_TYPE_URL, createExecutionService } from "../../src/grpc/execution-service";
import {
  Action,
  Command,
  Compressor_Value,
  DigestFunction_Value,
  ExecuteOperationMetadata,
  ExecuteResponse,
  ExecutionStage_Value,
  Tree,
  type Digest as WireDigest,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { action, command, encodeDirectory } from "../exec/helpers";
import { createClients, grpc } from "../support/grpc-client";
import { ensureNixToolchain, type NixToolchain } from "../support/nix-fixture";
import { type TestBlob, type TestServer, blob, bytes, startTestServer } from "./harness";

/**
 * Buck2 OSS as a client, replayed request by request over TCP (it cannot use
 * Unix sockets). Buck2 never sends digest_function, uses zstd for every
 * ByteStream transfer once it is advertised, treats any non-OK per-blob batch
 * status as fatal, probes UpdateActionResult permission with an empty
 * result, and executes with the platform only on the Command, no PATH and no
 * WaitExecution (reapi-clients.md §6). Execution is the real executor,
 * sandbox and Nix fixture closure.
 */
const DIGESTS: DigestConfig = { defaultDigestFn: "sha256", instanceDigestFn: { "buck2/blake3": "blake3" } };

for (const instance of ["", "buck2/blake3"]) {
  const fn: DigestFn = instance === "" ? "sha256" : "blake3";
  describe(`Buck2 replay over TCP, instance "${instance}" (${fn} by instance binding)`, () => {
    let s: TestServer;
    let nix: NixToolchain;
    let dataDir: string;
    const cas = new MemoryBlobStore();
    const ac = new MemoryActionCache();
    beforeAll(async () => {
      nix = await ensureNixToolchain();
      dataDir = mkdtempSync(join(tmpdir(), "lre-buck2-"));
      // The real executor and sandbox; Buck2's actions declare their closure, so no server default.
      const { executor, scheduler } = await createLocalExecution({
        cas,
        dataDir,
        jobs: 2,
        defaultClosureRoots: [],
        closureViewOptions: { viewsDir: join(dataDir, "closures") },
      });
      const execution = createExecutionService({ cas, ac, executor, scheduler, digests: DIGESTS });
      s = await startTestServer({ transport: "tcp", execEnabled: true, digests: DIGESTS, cas, ac, extraServices: [execution] });
    }, 300_000);
    afterAll(async () => {
      await s?.stop();
      await cas.close();
      await ac.close();
      rmSync(dataDir, { recursive: true, force: true });
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

    test("Execute: platform only on Command, no PATH, no digest_function anywhere, stream held to done, outputs read back through zstd", async () => {
      // Uploads as Buck2 makes them: BatchUpdateBlobs, no digest_function.
      const input = blob(`input of ${instance}\n`, fn);
      const root = blob(Buffer.from(encodeDirectory({ files: [{ name: "in.txt", digest: input.digest }] })), fn);
      const cmd = blob(
        Buffer.from(
          Command.encode(
            command({
              // No PATH: lre makes one from the closure's bin directories, so bare `sh` and `hello` are found.
              argv: ["sh", "-c", 'mkdir -p out/d && hello > out/greeting.txt && tr a-z A-Z < in.txt > out/d/upper.txt && echo "$PATH" > out/path.txt && echo done'],
              outputPaths: ["out/d", "out/greeting.txt", "out/path.txt"],
              platform: { "nix-closure": nix.toolchainB, OSFamily: "linux", "container-image": "ignored" },
            }),
          ).finish(),
        ),
        fn,
      );
      const act = blob(Buffer.from(Action.encode(action({ command: cmd.digest, inputRoot: root.digest, salt: crypto.randomUUID() })).finish()), fn);
      expect(Action.decode(act.data).platform).toBeUndefined();
      const up = await s.clients.batchUpdateBlobs({
        instanceName: instance,
        requests: [input, root, cmd, act].map((b) => ({ digest: b.wire, data: b.data, compressor: Compressor_Value.IDENTITY })),
      });
      expect(up.responses.every((r) => r.status?.code === GrpcCode.OK)).toBe(true);

      // Execute without digest_function, and no WaitExecution: the one stream must end with done.
      const ops = await s.clients.execute({ instanceName: instance, actionDigest: act.wire });
      const metas = ops.map((o) => ExecuteOperationMetadata.decode(o.metadata!.value));
      expect(metas.every((m) => m.digestFunction === (fn === "sha256" ? DigestFunction_Value.SHA256 : DigestFunction_Value.BLAKE3))).toBe(true);
      expect(metas[metas.length - 1]!.stage).toBe(ExecutionStage_Value.COMPLETED);
      const last = ops[ops.length - 1]!;
      expect(last.done).toBe(true);
      expect(ops.slice(0, -1).every((o) => !o.done)).toBe(true);
      expect(last.error).toBeUndefined();
      expect(last.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
      const res = ExecuteResponse.decode(last.response!.value);
      expect(res.status?.code ?? 0).toBe(0);
      const result = res.result!;
      expect(result.exitCode).toBe(0);

      // Downloads: every blob through ByteStream compressed-blobs/zstd, under the instance's function.
      const readZstd = async (d: WireDigest | undefined): Promise<string> => {
        expect(d).toBeDefined();
        const name = formatReadResourceName(instance, { fn, hash: d!.hash, sizeBytes: d!.sizeBytes }, "zstd");
        const r = await s.clients.read({ resourceName: name, readOffset: 0 });
        return zlib.zstdDecompressSync(r.data).toString();
      };
      expect(await readZstd(result.stdoutDigest)).toBe("done\n");
      const files = new Map(result.outputFiles.map((f) => [f.path, f.digest]));
      expect([...files.keys()].sort()).toEqual(["out/greeting.txt", "out/path.txt"]);
      expect(await readZstd(files.get("out/greeting.txt"))).toBe("hello from toolchain-b\n");
      expect((await readZstd(files.get("out/path.txt"))).split(":")).toContain(`${nix.toolchainB}/bin`);
      // Buck2 needs tree_digest for directories.
      expect(result.outputDirectories.map((d) => d.path)).toEqual(["out/d"]);
      const treeDigest = result.outputDirectories[0]!.treeDigest!;
      const treeName = formatReadResourceName(instance, { fn, hash: treeDigest.hash, sizeBytes: treeDigest.sizeBytes }, "zstd");
      const tree = Tree.decode(zlib.zstdDecompressSync((await s.clients.read({ resourceName: treeName, readOffset: 0 })).data));
      expect(tree.root!.files.map((f) => f.name)).toEqual(["upper.txt"]);
      expect(await readZstd(tree.root!.files[0]!.digest)).toBe(`INPUT OF ${instance.toUpperCase()}\n`);
    }, 120_000);

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
