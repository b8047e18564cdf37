import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import {
  type BatchReadBlobsResponse,
  type BatchUpdateBlobsResponse,
  ContentAddressableStorageClient,
  DigestFunction_Value,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { BUN, REPO, lre, startServe, stop, type Server } from "../cli/lre-process";

/**
 * The single-binary promise: dist/lre copied alone into an empty directory,
 * with no node_modules anywhere above it, still loads its native addons
 * (LMDB, BLAKE3) and serves. Set LRE_BINARY to test an existing build
 * (npm test does, after npm run build); otherwise the test builds one.
 */

let dir: string;
let exe: string;
let server: Server | undefined;

beforeAll(async () => {
  // Under /tmp, never inside the repo, so nothing can be resolved from node_modules.
  dir = mkdtempSync(join(tmpdir(), "lre-binary-"));
  exe = join(dir, "lre");
  const prebuilt = process.env.LRE_BINARY;
  if (prebuilt !== undefined && prebuilt !== "") {
    copyFileSync(join(REPO, prebuilt), exe);
  } else {
    const built = join(mkdtempSync(join(tmpdir(), "lre-build-")), "lre");
    const b = Bun.spawnSync([BUN, join(REPO, "scripts", "build.ts"), "--outfile", built], { stdout: "pipe", stderr: "pipe" });
    if (b.exitCode !== 0) throw new Error(`build failed: ${b.stderr.toString()}`);
    copyFileSync(built, exe);
  }
  Bun.spawnSync(["chmod", "+x", exe]);
}, 300_000);

afterAll(async () => {
  if (server !== undefined && server.proc.exitCode === null) await stop(server, "SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

function cas(target: string): ContentAddressableStorageClient {
  return new ContentAddressableStorageClient(target, grpc.credentials.createInsecure());
}

function call<Res>(invoke: (cb: (err: grpc.ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => invoke((err, res) => (err ? reject(err) : resolve(res))));
}

describe("the compiled lre binary, alone in an empty directory", () => {
  test("the directory holds nothing but the binary", () => {
    expect(readdirSync(dir)).toEqual(["lre"]);
  });

  test("--version runs", async () => {
    const r = await lre(["--version"], { cmd: [exe], cwd: dir });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^lre \d+\.\d+\.\d+ \(bun 1\.4\.5, linux-x64\)\n$/);
  });

  test("serves: SHA-256 and BLAKE3 blobs stored over the socket read back identical, LMDB files in the data dir", async () => {
    const sock = join(dir, "run", "lre.sock");
    const dataDir = join(dir, "data");
    server = await startServe(["--socket", sock, "--data-dir", dataDir], { cmd: [exe], cwd: dir });
    expect(server.banner).toBe(`lre listening on unix://${sock}, data dir ${dataDir}`);

    const client = cas(`unix:${sock}`);
    try {
      for (const [fn, wire] of [
        ["sha256", DigestFunction_Value.SHA256],
        ["blake3", DigestFunction_Value.BLAKE3],
      ] as const) {
        const data = Buffer.from(`hello from the ${fn} smoke test`);
        const digest = digestOf(fn, data);
        const wireDigest = { hash: digest.hash, sizeBytes: digest.sizeBytes };
        // The server hashes the blob itself: a wrong BLAKE3 in the binary would reject it.
        const up = await call<BatchUpdateBlobsResponse>((cb) =>
          client.batchUpdateBlobs({ instanceName: "", digestFunction: wire, requests: [{ digest: wireDigest, data, compressor: 0 }] }, cb),
        );
        expect(up.responses.map((r) => r.status?.code ?? 0)).toEqual([0]);
        const down = await call<BatchReadBlobsResponse>((cb) =>
          client.batchReadBlobs({ instanceName: "", digestFunction: wire, digests: [wireDigest], acceptableCompressors: [] }, cb),
        );
        expect(down.responses[0]?.status?.code ?? 0).toBe(0);
        expect(Buffer.from(down.responses[0]?.data ?? []).equals(data)).toBe(true);
      }
      // A blob whose bytes do not match its BLAKE3 digest is refused, so hashing really happened.
      const wrong = digestOf("blake3", Buffer.from("other bytes"));
      const bad = await call<BatchUpdateBlobsResponse>((cb) =>
        client.batchUpdateBlobs(
          {
            instanceName: "",
            digestFunction: DigestFunction_Value.BLAKE3,
            requests: [{ digest: { hash: wrong.hash, sizeBytes: 5 }, data: Buffer.from("bytes"), compressor: 0 }],
          },
          cb,
        ),
      );
      expect(bad.responses[0]?.status?.code).toBe(grpc.status.INVALID_ARGUMENT);
    } finally {
      client.close();
    }

    expect(await stop(server)).toBe(0);
    expect(existsSync(sock)).toBe(false);
    const lmdbFiles = readdirSync(dataDir, { recursive: true }).map(String);
    expect(lmdbFiles.some((f) => f.endsWith("data.mdb"))).toBe(true);
  }, 60_000);

  test("stats reads the blobs back from LMDB after the server has gone", async () => {
    const r = await lre(["stats", "--data-dir", join(dir, "data"), "--json"], { cmd: [exe], cwd: dir });
    expect(r.exitCode).toBe(0);
    const stats = JSON.parse(r.stdout) as { dataDir: string; blobs: number; bytes: number };
    expect(stats.dataDir).toBe(join(dir, "data"));
    expect(stats.blobs).toBe(2);
    expect(stats.bytes).toBe("hello from the sha256 smoke test".length + "hello from the blake3 smoke test".length);
  });
});
