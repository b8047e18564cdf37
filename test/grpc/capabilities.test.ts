import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  Compressor_Value,
  DigestFunction_Value,
  type ServerCapabilities,
  SymlinkAbsolutePathStrategy_Value,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { SemVer } from "../../src/proto/build/bazel/semver/semver";
import { grpc, rpcError } from "../support/grpc-client";
import { TRANSPORTS, type TestServer, startTestServer } from "./harness";

const v = (s: SemVer | undefined) => (s === undefined ? Number.NaN : s.major * 1000 + s.minor);

/** The checks Bazel 4.2.3's RemoteServerCapabilities makes before it uses a remote cache or executor. */
function bazel423Accepts(caps: ServerCapabilities, remoteExecution: boolean): string[] {
  const problems: string[] = [];
  if (!(v(caps.lowApiVersion) <= 2000 && 2000 <= v(caps.highApiVersion))) problems.push("API 2.0 outside [low, high]");
  const cache = caps.cacheCapabilities;
  if (!cache?.digestFunctions.includes(DigestFunction_Value.SHA256)) problems.push("cache lacks SHA256");
  if (cache?.actionCacheUpdateCapabilities?.updateEnabled !== true) problems.push("AC updates disabled");
  if (remoteExecution) {
    if (caps.executionCapabilities?.execEnabled !== true) problems.push("execution disabled");
    if (caps.executionCapabilities?.digestFunction !== DigestFunction_Value.SHA256) problems.push("exec digest not SHA256");
  }
  return problems;
}

for (const transport of TRANSPORTS) {
  describe(`GetCapabilities over ${transport}`, () => {
    let exec: TestServer;
    let cacheOnly: TestServer;
    beforeAll(async () => {
      exec = await startTestServer({ transport, execEnabled: true });
      cacheOnly = await startTestServer({ transport, execEnabled: false });
    });
    afterAll(async () => {
      await exec.stop();
      await cacheOnly.stop();
    });

    test("Bazel 4.2.3 accepts the reply for remote execution and for a cache-only server", async () => {
      expect(bazel423Accepts(await exec.clients.getCapabilities({ instanceName: "main" }), true)).toEqual([]);
      const cache = await cacheOnly.clients.getCapabilities({});
      expect(bazel423Accepts(cache, false)).toEqual([]);
      expect(cache.executionCapabilities?.execEnabled).toBe(false);
    });

    test("versions: low 2.0, deprecated 2.0, high 2.3; newer clients find their digest function in both lists", async () => {
      const caps = await exec.clients.getCapabilities({});
      expect([caps.lowApiVersion, caps.deprecatedApiVersion, caps.highApiVersion].map((x) => `${x?.major}.${x?.minor}`)).toEqual([
        "2.0",
        "2.0",
        "2.3",
      ]);
      const both = [DigestFunction_Value.SHA256, DigestFunction_Value.BLAKE3];
      expect(caps.cacheCapabilities?.digestFunctions).toEqual(both);
      expect(caps.executionCapabilities?.digestFunctions).toEqual(both);
      // REAPI 2.7: digest_functions must contain digest_function.
      expect(caps.executionCapabilities?.digestFunctions).toContain(caps.executionCapabilities?.digestFunction ?? -1);
      expect(caps.cacheCapabilities?.symlinkAbsolutePathStrategy).toBe(SymlinkAbsolutePathStrategy_Value.ALLOWED);
    });

    test("what Buck2 reads: ZSTD among supported_compressors and a 4,000,000-byte batch limit", async () => {
      const caps = await exec.clients.getCapabilities({ instanceName: "" });
      expect(caps.cacheCapabilities?.supportedCompressors).toEqual([Compressor_Value.ZSTD]);
      expect(caps.cacheCapabilities?.maxBatchTotalSizeBytes).toBe(4_000_000);
    });

    test("a malformed instance name is INVALID_ARGUMENT", async () => {
      for (const instanceName of ["../x", "a//b", "blobs"]) {
        expect((await rpcError(exec.clients.getCapabilities({ instanceName }))).code).toBe(grpc.status.INVALID_ARGUMENT);
      }
    });
  });
}
