import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import { ByteStreamClient, type WriteResponse } from "../../src/proto/google/bytestream/bytestream";
import { lre, startServe, stop, tempDir } from "./lre-process";

test("work still running when --grace runs out is cut off, and the server still exits 0", async () => {
  const d = tempDir();
  const sock = join(d, "lre.sock");
  const server = await startServe(["--socket", sock, "--data-dir", join(d, "data"), "--grace", "0.5"]);
  const data = Buffer.alloc(1024, 1);
  const digest = digestOf("sha256", data);
  const client = new ByteStreamClient(`unix:${sock}`, grpc.credentials.createInsecure());
  const outcome = new Promise<string>((resolve) => {
    const call = client.write((err) => resolve(err ? "cut off" : "finished"));
    call.write(
      { resourceName: `uploads/1b7c9f1e-5f6a-4d53-9a0e-2c1d3e4f5a6b/blobs/${digest.hash}/1024`, writeOffset: 0, finishWrite: false, data: data.subarray(0, 512) },
      () => void server.proc.kill("SIGTERM"),
    );
    // The client never finishes its upload.
  });
  const started = Date.now();
  expect(await server.proc.exited).toBe(0);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(await outcome).toBe("cut off");
  client.close();
  expect(existsSync(sock)).toBe(false);
  await stop(server).catch(() => 0);
});

test("SIGTERM lets an upload already under way finish within --grace, then exits 0 with the blob stored", async () => {
  const d = tempDir();
  const sock = join(d, "lre.sock");
  const dataDir = join(d, "data");
  const server = await startServe(["--socket", sock, "--data-dir", dataDir, "--grace", "20", "--log-level", "debug"]);

  const data = Buffer.alloc(256 * 1024, 7);
  const digest = digestOf("sha256", data);
  const resource = `uploads/0b7c9f1e-5f6a-4d53-9a0e-2c1d3e4f5a6b/blobs/${digest.hash}/${digest.sizeBytes}`;
  const client = new ByteStreamClient(`unix:${sock}`, grpc.credentials.createInsecure());
  const done = new Promise<WriteResponse>((resolve, reject) => {
    const call = client.write((err, res) => (err ? reject(err) : resolve(res)));
    const half = data.byteLength / 2;
    call.write({ resourceName: resource, writeOffset: 0, finishWrite: false, data: data.subarray(0, half) });
    // Only once the server holds the first half is it told to stop...
    void waitForCommitted(client, resource, half).then(() => {
      server.proc.kill("SIGTERM");
      // ...and the client finishes the upload a moment later, inside the grace period.
      setTimeout(() => {
        call.write({ resourceName: "", writeOffset: half, finishWrite: true, data: data.subarray(half) });
        call.end();
      }, 500);
    }, reject);
  });
  const res = await done;
  client.close();
  expect(res.committedSize).toBe(data.byteLength);
  expect(await server.proc.exited).toBe(0);
  expect(existsSync(sock)).toBe(false);

  const stats = await lre(["stats", "--data-dir", dataDir, "--json"]);
  expect(JSON.parse(stats.stdout)).toMatchObject({ blobs: 1, bytes: data.byteLength });
});

async function waitForCommitted(client: ByteStreamClient, resourceName: string, size: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const committed = await new Promise<number>((resolve, reject) =>
      client.queryWriteStatus({ resourceName }, (err, res) => (err ? reject(err) : resolve(res.committedSize))),
    );
    if (committed >= size) return;
    await Bun.sleep(25);
  }
  throw new Error(`the server never reported ${size} bytes committed for ${resourceName}`);
}
