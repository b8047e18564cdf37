import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import {
  type BatchUpdateBlobsResponse,
  ContentAddressableStorageClient,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { lre, startServe, stop, tempDir } from "./lre-process";

async function putBlob(sock: string, data: Buffer): Promise<void> {
  const client = new ContentAddressableStorageClient(`unix:${sock}`, grpc.credentials.createInsecure());
  const d = digestOf("sha256", data);
  try {
    const res = await new Promise<BatchUpdateBlobsResponse>((resolve, reject) =>
      client.batchUpdateBlobs(
        { instanceName: "", digestFunction: 0, requests: [{ digest: { hash: d.hash, sizeBytes: d.sizeBytes }, data, compressor: 0 }] },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    expect(res.responses[0]?.status?.code ?? 0).toBe(0);
  } finally {
    client.close();
  }
}

describe("lre stats and lre gc", () => {
  test("work beside a running server and after it has stopped", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const dataDir = join(d, "data");
    const server = await startServe(["--socket", sock, "--data-dir", dataDir, "--jobs", "3"]);
    try {
      await putBlob(sock, Buffer.from("twelve bytes"));

      const live = await lre(["stats", "--data-dir", dataDir, "--json"]);
      expect(live.exitCode).toBe(0);
      expect(JSON.parse(live.stdout)).toMatchObject({
        dataDir,
        blobs: 1,
        bytes: 12,
        executor: { jobs: 3, running: 0, queued: 0, done: 0, pid: server.proc.pid },
      });

      const text = await lre(["stats", "--data-dir", dataDir]);
      expect(text.stdout).toContain(`data dir        ${dataDir}`);
      expect(text.stdout).toMatch(/^cas +1 blobs, 12 B of /m);
      expect(text.stdout).toMatch(/^executor +0 of 3 jobs running, 0 queued, 0 done/m);

      // A target above the cache's size evicts nothing.
      const gc = await lre(["gc", "--to", "1GiB", "--data-dir", dataDir]);
      expect(gc.exitCode).toBe(0);
      expect(gc.stdout).toBe("evicted 0 blobs (0 B); cache is now 12 B\n");
    } finally {
      expect(await stop(server)).toBe(0);
    }
    const after = await lre(["stats", "--data-dir", dataDir, "--json"]);
    expect(JSON.parse(after.stdout)).toMatchObject({ blobs: 1, bytes: 12, executor: null });
    expect((await lre(["stats", "--data-dir", dataDir])).stdout).toContain("executor        no server running on this data dir");
  });

  test("a data dir that cannot be opened is an error naming it, exit 1", async () => {
    const r = await lre(["stats", "--data-dir", "/proc/lre-data"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('"/proc/lre-data"');
  });
});
