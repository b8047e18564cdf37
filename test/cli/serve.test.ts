import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { CapabilitiesClient } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { ensureNixToolchain } from "../support/nix-fixture";
import { lre, startServe, stop, tempDir, type Server, BUN } from "./lre-process";

const running: Server[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) if (s.proc.exitCode === null) await stop(s, "SIGKILL");
});

async function serve(args: string[]): Promise<Server> {
  const s = await startServe(args);
  running.push(s);
  return s;
}

function capabilities(target: string): Promise<unknown> {
  const client = new CapabilitiesClient(target, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.getCapabilities({ instanceName: "" }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    }),
  );
}

/** A socket file with nothing behind it: what a server killed with SIGKILL leaves. */
async function staleSocket(path: string): Promise<void> {
  const holder = Bun.spawn([BUN, "-e", `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`], {
    stdout: "pipe",
  });
  const reader = holder.stdout.getReader();
  await reader.read();
  holder.kill("SIGKILL");
  await holder.exited;
}

describe("lre serve", () => {
  test("prints one line naming the socket, the TCP address and the data dir, and answers gRPC on both", async () => {
    const d = tempDir();
    const sock = join(d, "run", "lre.sock");
    const s = await serve(["--socket", sock, "--data-dir", join(d, "data"), "--tcp", "127.0.0.1:0"]);
    const m = /^lre listening on unix:\/\/(\S+) and grpc:\/\/(127\.0\.0\.1:\d+), data dir (\S+)$/.exec(s.banner);
    expect(m).not.toBeNull();
    expect(m?.[1]).toBe(sock);
    expect(m?.[3]).toBe(join(d, "data"));
    expect(await capabilities(`unix:${sock}`)).toBeDefined();
    expect(await capabilities(m?.[2] as string)).toBeDefined();
    expect(await stop(s)).toBe(0);
  });

  test("creates the socket 0600 inside a new 0700 directory", async () => {
    const d = tempDir();
    const sock = join(d, "deep", "er", "lre.sock");
    await serve(["--socket", sock, "--data-dir", join(d, "data")]);
    expect(statSync(sock).isSocket()).toBe(true);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    expect(statSync(join(d, "deep", "er")).mode & 0o777).toBe(0o700);
  });

  test("tightens its own lre directory to 0700 when it was left open", async () => {
    const d = tempDir();
    const dir = join(d, "lre");
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    await serve(["--socket", join(dir, "lre.sock"), "--data-dir", join(d, "data")]);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  test("replaces a stale socket left by a dead server", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    await staleSocket(sock);
    expect(statSync(sock).isSocket()).toBe(true);
    const s = await serve(["--socket", sock, "--data-dir", join(d, "data")]);
    expect(await capabilities(`unix:${sock}`)).toBeDefined();
    expect(await stop(s)).toBe(0);
  });

  test("refuses a socket a live server is listening on, naming it, exit 1", async () => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const first = await serve(["--socket", sock, "--data-dir", join(d, "data")]);
    const second = await lre(["serve", "--socket", sock, "--data-dir", join(d, "data2")]);
    expect(second.exitCode).toBe(1);
    expect(second.stderr).toContain(`"${sock}"`);
    expect(second.stderr).toContain("already listening");
    // The first server is untouched.
    expect(await capabilities(`unix:${sock}`)).toBeDefined();
    expect(await stop(first)).toBe(0);
  });

  test("refuses a socket path that is a regular file", async () => {
    const d = tempDir();
    const sock = join(d, "not-a-socket");
    writeFileSync(sock, "precious");
    const r = await lre(["serve", "--socket", sock, "--data-dir", join(d, "data")]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`"${sock}" exists and is not a socket`);
  });

  test("a --closure store path Nix does not know is an error naming it, exit 1, before anything listens", async () => {
    const { toolchainA } = await ensureNixToolchain();
    const d = tempDir();
    const unknown = "/nix/store/00000000000000000000000000000000-never-built";
    const r = await lre(["serve", "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--closure", toolchainA, "--closure", `${unknown}/bin/sh`]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`--closure "${unknown}/bin/sh" (store path "${unknown}") is not valid in this machine's Nix store`);
    expect(r.stderr).toContain(`nix-store --realise ${unknown}`);
    expect(r.stdout).toBe("");
    expect(existsSync(join(d, "lre.sock"))).toBe(false);
  }, 60_000);

  test("a --closure store path Nix knows is accepted", async () => {
    const { toolchainA } = await ensureNixToolchain();
    const d = tempDir();
    const s = await serve(["--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--closure", `${toolchainA}/bin/sh`]);
    expect(await capabilities(`unix:${join(d, "lre.sock")}`)).toBeDefined();
    expect(await stop(s)).toBe(0);
  }, 60_000);

  test("a data dir that cannot be written is an error naming it, exit 1", async () => {
    const d = tempDir();
    // A regular file where a parent directory should be: not writable even for root.
    writeFileSync(join(d, "file"), "");
    const dataDir = join(d, "file", "data");
    const r = await lre(["serve", "--socket", join(d, "lre.sock"), "--data-dir", dataDir]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`data dir "${dataDir}" cannot be written`);
    expect(existsSync(join(d, "lre.sock"))).toBe(false);
  });

  test("a data dir on a read-only filesystem is an error naming it, exit 1", async () => {
    const r = await lre(["serve", "--socket", join(tempDir(), "lre.sock"), "--data-dir", "/proc/lre-data"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('data dir "/proc/lre-data" cannot be written');
  });

  test.each(["SIGTERM", "SIGINT"] as const)("%s stops the server: exit 0, socket removed", async (signal) => {
    const d = tempDir();
    const sock = join(d, "lre.sock");
    const s = await serve(["--socket", sock, "--data-dir", join(d, "data"), "--grace", "2"]);
    expect(existsSync(sock)).toBe(true);
    expect(await stop(s, signal)).toBe(0);
    expect(existsSync(sock)).toBe(false);
    expect(await s.stderr()).toContain(`${signal} received`);
  });

  test("a busy TCP port is an error naming it, and leaves no socket behind", async () => {
    const d = tempDir();
    const first = await serve(["--socket", join(d, "a.sock"), "--data-dir", join(d, "a"), "--tcp", "127.0.0.1:0"]);
    const port = /grpc:\/\/127\.0\.0\.1:(\d+)/.exec(first.banner)?.[1];
    const r = await lre(["serve", "--socket", join(d, "b.sock"), "--data-dir", join(d, "b"), "--tcp", `127.0.0.1:${port}`]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
    expect(existsSync(join(d, "b.sock"))).toBe(false);
  });
});
