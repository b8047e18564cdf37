import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode } from "../../src/errors";
import { openStorage } from "../../src/storage/open-storage";
import {
  type BatchUpdateBlobsResponse,
  ContentAddressableStorageClient,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { lre, startServe, stop, tempDir } from "./lre-process";

async function putBlob(sock: string, data: Buffer): Promise<void> {
  expect(await uploadStatus(sock, data)).toBe(0);
}

/** The gRPC status code BatchUpdateBlobs gives the one blob. */
async function uploadStatus(sock: string, data: Buffer): Promise<number> {
  const client = new ContentAddressableStorageClient(`unix:${sock}`, grpc.credentials.createInsecure());
  const d = digestOf("sha256", data);
  try {
    const res = await new Promise<BatchUpdateBlobsResponse>((resolve, reject) =>
      client.batchUpdateBlobs(
        { instanceName: "", digestFunction: 0, requests: [{ digest: { hash: d.hash, sizeBytes: d.sizeBytes }, data, compressor: 0 }] },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    return res.responses[0]?.status?.code ?? 0;
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

  test("gc keeps blobs used within --protect-for (3h by default); --protect-for 0 evicts them", async () => {
    const dataDir = join(tempDir(), "data");
    const storage = await openStorage({ dataDir, maxBytes: 1 << 30 });
    const data = Buffer.from("used a moment ago");
    await storage.cas.put(digestOf("sha256", data), data);
    await storage.close();

    const kept = await lre(["gc", "--to", "1", "--data-dir", dataDir]);
    expect(kept.stdout).toBe("evicted 0 blobs (0 B); cache is now 17 B\n");
    const stillKept = await lre(["gc", "--to", "1", "--protect-for", "1h", "--data-dir", dataDir]);
    expect(stillKept.stdout).toBe("evicted 0 blobs (0 B); cache is now 17 B\n");
    const evicted = await lre(["gc", "--to", "1", "--protect-for", "0", "--data-dir", dataDir]);
    expect(evicted.exitCode).toBe(0);
    expect(evicted.stdout).toBe("evicted 1 blobs (17 B); cache is now 0 B\n");
  });

  test("lre serve --protect-for 0 evicts a blob used a moment ago to make room, which the default refuses", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const dataDir = join(d, "data");
    const [first, second] = [Buffer.alloc(60, "a"), Buffer.alloc(60, "b")];
    const protecting = await startServe(["--socket", sock, "--data-dir", dataDir, "--max-cache-size", "100", "--no-exec"]);
    try {
      await putBlob(sock, first);
      expect(await uploadStatus(sock, second)).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    } finally {
      expect(await stop(protecting)).toBe(0);
    }
    const evicting = await startServe(["--socket", sock, "--data-dir", dataDir, "--max-cache-size", "100", "--no-exec", "--protect-for", "0"]);
    try {
      await putBlob(sock, second);
    } finally {
      expect(await stop(evicting)).toBe(0);
    }
    const stats = await lre(["stats", "--data-dir", dataDir, "--json"]);
    expect(JSON.parse(stats.stdout)).toMatchObject({ blobs: 1, bytes: 60 });
  });

  test("a data dir that cannot be opened is an error naming it, exit 1", async () => {
    const r = await lre(["stats", "--data-dir", "/proc/lre-data"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('"/proc/lre-data"');
  });
});
