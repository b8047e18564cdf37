import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { digestOf } from "../../src/digest/hasher";
import { ByteStreamClient } from "../../src/proto/google/bytestream/bytestream";
import { startServe, stop, tempDir } from "./lre-process";

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
