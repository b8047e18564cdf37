import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode } from "../../src/errors";
import { openStorage } from "../../src/storage/open-storage";
import {
  ActionResult,
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

/** A bundle holding just `blob`, exported by `lre export` from a store of its own under `dir`. */
async function bundleOf(dir: string, name: string, blob: Buffer): Promise<string> {
  const source = join(dir, "source");
  const storage = await openStorage({ dataDir: source, maxBytes: 1 << 30 });
  await storage.cas.put(digestOf("sha256", blob), blob);
  await storage.close();
  const bundle = join(dir, name);
  expect((await lre(["export", bundle, "--data-dir", source])).exitCode).toBe(0);
  return bundle;
}

describe("lre stats and lre gc", () => {
  test("work beside a running server and after it has stopped", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const dataDir = join(d, "data");
    const server = await startServe(["--socket", sock, "--data-dir", dataDir, "--jobs", "3", "--max-cache-size", "3GiB"]);
    try {
      await putBlob(sock, Buffer.from("twelve bytes"));

      const live = await lre(["stats", "--data-dir", dataDir, "--json"]);
      expect(live.exitCode).toBe(0);
      expect(JSON.parse(live.stdout)).toMatchObject({
        dataDir,
        blobs: 1,
        bytes: 12,
        maxBytes: 3 * 1024 ** 3,
        executor: { jobs: 3, running: 0, queued: 0, done: 0, pid: server.proc.pid },
      });

      const text = await lre(["stats", "--data-dir", dataDir]);
      expect(text.stdout).toContain(`data dir        ${dataDir}`);
      // The server's --max-cache-size, not the default stats would pick for itself.
      expect(text.stdout).toContain("cas             1 blobs, 12 B of 3 GiB\n");
      expect(text.stdout).toMatch(/^executor +0 of 3 jobs running, 0 queued, 0 done/m);

      // A target above the cache's size evicts nothing.
      const gc = await lre(["gc", "--to", "1GiB", "--data-dir", dataDir]);
      expect(gc.exitCode).toBe(0);
      expect(gc.stdout).toBe("evicted 0 blobs (0 B); cache is now 12 B\n");
    } finally {
      expect(await stop(server)).toBe(0);
    }
    const after = await lre(["stats", "--data-dir", dataDir, "--json"]);
    expect(JSON.parse(after.stdout)).toMatchObject({ blobs: 1, bytes: 12, maxBytes: 3 * 1024 ** 3, executor: null });
    expect((await lre(["stats", "--data-dir", dataDir])).stdout).toContain("executor        no server running on this data dir");
  });

  test("stats of a data dir no server has run on: no limit unless --max-cache-size, and action results by origin", async () => {
    const dataDir = join(tempDir(), "data");
    const storage = await openStorage({ dataDir, maxBytes: 1 << 30 });
    const result = ActionResult.fromPartial({ exitCode: 0 });
    const action = (text: string) => digestOf("sha256", Buffer.from(text));
    await storage.ac.put("", action("compile"), { result, origin: "sandbox" });
    await storage.ac.put("", action("link"), { result, origin: "sandbox" });
    await storage.ac.put("", action("test"), { result, origin: "client" });
    await storage.close();

    const text = await lre(["stats", "--data-dir", dataDir]);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toContain("cas             0 blobs, 0 B (no limit recorded)\n");
    expect(text.stdout).toContain("protection      blobs used within 3h are never evicted (the default; no lre serve has recorded one)\n");
    expect(text.stdout).toContain("action cache    3 entries (2 run by lre, 1 uploaded by clients)\n");
    expect(JSON.parse((await lre(["stats", "--data-dir", dataDir, "--json"])).stdout)).toMatchObject({
      maxBytes: null,
      protectMs: 3 * 3600_000,
      protectRecorded: false,
      acEntries: 3,
      acFromSandbox: 2,
      acFromClients: 1,
    });

    const given = await lre(["stats", "--data-dir", dataDir, "--max-cache-size", "20GiB"]);
    expect(given.stdout).toContain("cas             0 blobs, 0 B of 20 GiB\n");
  });

  test("gc keeps blobs used within --protect-for (3h by default when no lre serve recorded one); --protect-for 0 evicts them", async () => {
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

  test("gc and import default to the --protect-for of the last lre serve, which stats shows", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const dataDir = join(d, "data");
    const [served, bundled] = [Buffer.alloc(60, "a"), Buffer.alloc(60, "b")];
    const server = await startServe(["--socket", sock, "--data-dir", dataDir, "--no-exec", "--protect-for", "0"]);
    try {
      await putBlob(sock, served);
    } finally {
      expect(await stop(server)).toBe(0);
    }

    const text = await lre(["stats", "--data-dir", dataDir]);
    expect(text.stdout).toContain("protection      none, blobs are evicted by last use alone (recorded by the last lre serve)\n");
    expect(JSON.parse((await lre(["stats", "--data-dir", dataDir, "--json"])).stdout)).toMatchObject({ protectMs: 0, protectRecorded: true });

    // A bundle whose blob fits in a 100-byte cache only if the served blob, used a moment ago, is evicted.
    const bundle = await bundleOf(d, "one.lrebundle", bundled);

    // An explicit window still wins over the recorded one.
    const refused = await lre(["import", bundle, "--max-cache-size", "100", "--protect-for", "3h", "--data-dir", dataDir]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain("the CAS is full");
    const kept = await lre(["gc", "--to", "1", "--protect-for", "3h", "--data-dir", dataDir]);
    expect(kept.stdout).toBe("evicted 0 blobs (0 B); cache is now 60 B\n");

    const imported = await lre(["import", bundle, "--max-cache-size", "100", "--data-dir", dataDir]);
    expect(imported.exitCode).toBe(0);
    expect(imported.stdout).toBe("added 1 blobs (60 B) and 0 action results; 0 already present\n");
    const evicted = await lre(["gc", "--to", "1", "--data-dir", dataDir]);
    expect(evicted.exitCode).toBe(0);
    expect(evicted.stdout).toBe("evicted 1 blobs (60 B); cache is now 0 B\n");

    const recorded = await startServe(["--socket", sock, "--data-dir", dataDir, "--no-exec", "--protect-for", "1h30m"]);
    expect(await stop(recorded)).toBe(0);
    expect((await lre(["stats", "--data-dir", dataDir])).stdout).toContain(
      "protection      blobs used within 1h30m are never evicted (recorded by the last lre serve)\n",
    );
  });

  test("import respects the --max-cache-size of the last lre serve unless given one", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const dataDir = join(d, "data");
    const blob = Buffer.alloc(200, "c");
    // A server that allows 100 bytes, so the 200-byte blob never fits.
    const server = await startServe(["--socket", sock, "--data-dir", dataDir, "--no-exec", "--max-cache-size", "100"]);
    expect(await stop(server)).toBe(0);

    const bundle = await bundleOf(d, "big.lrebundle", blob);

    const refused = await lre(["import", bundle, "--data-dir", dataDir]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain("larger than the whole CAS (maxBytes 100)");
    const allowed = await lre(["import", bundle, "--max-cache-size", "1KiB", "--data-dir", dataDir]);
    expect(allowed.exitCode).toBe(0);
    expect(allowed.stdout).toBe("added 1 blobs (200 B) and 0 action results; 0 already present\n");
  });

  test("a data dir that cannot be opened is an error naming it, exit 1", async () => {
    const r = await lre(["stats", "--data-dir", "/proc/lre-data"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('"/proc/lre-data"');
  });
});
