import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestCerts, makeTestCerts } from "../support/certs";
import { createClients, grpc, rpcError } from "../support/grpc-client";
import { lre, startServe, stop, tempDir, type Server } from "./lre-process";

/** `lre serve` with --tls-cert/--tls-key/--tls-client-ca/--token-file, as a user runs it (reliability-targets.md H-2). */

const running: Server[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) if (s.proc.exitCode === null) await stop(s, "SIGKILL");
});

let certs: TestCerts;
beforeAll(() => {
  certs = makeTestCerts();
});
afterAll(() => rmSync(certs.dir, { recursive: true, force: true }));

const TOKEN = "0123456789abcdef0123456789abcdef";

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

describe("lre serve with TLS and tokens", () => {
  test("serves grpcs:// with tokens on TCP while the Unix socket stays open to its owner", async () => {
    const d = tempDir();
    const tokens = join(d, "tokens");
    writeFileSync(tokens, `# the only client\n${TOKEN} read\n`);
    const sock = join(d, "lre.sock");
    const s = await startServe([
      "--socket", sock, "--data-dir", join(d, "data"), "--tcp", "127.0.0.1:0",
      "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--token-file", tokens, "--no-exec",
    ]);
    running.push(s);
    const address = /grpcs:\/\/(127\.0\.0\.1:\d+)/.exec(s.banner)?.[1];
    expect(address).toBeDefined();
    const creds = grpc.credentials.createSsl(certs.read(certs.serverCa));
    const c = createClients(address as string, { "grpc.ssl_target_name_override": "localhost" }, creds);
    expect((await c.getCapabilities({})).cacheCapabilities).toBeDefined();
    const digest = { hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sizeBytes: 0 };
    expect((await rpcError(c.findMissingBlobs({ blobDigests: [digest] }))).code).toBe(grpc.status.UNAUTHENTICATED);
    expect(await c.findMissingBlobs({ blobDigests: [digest] }, bearer(TOKEN))).toBeDefined();
    expect((await rpcError(c.batchUpdateBlobs({ requests: [] }, bearer(TOKEN)))).code).toBe(grpc.status.PERMISSION_DENIED);
    c.close();
    const local = createClients(sock);
    expect(await local.batchUpdateBlobs({ requests: [] })).toBeDefined();
    local.close();
    expect(await stop(s)).toBe(0);
    expect(await s.stderr()).toContain("TCP listener: TLS, 1 bearer token(s) required");
  });

  test("listens on a non-loopback address once it has TLS and client certificates", async () => {
    const d = tempDir();
    const s = await startServe([
      "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--tcp", "0.0.0.0:0", "--no-exec",
      "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--tls-client-ca", certs.clientCa,
    ]);
    running.push(s);
    const port = /grpcs:\/\/0\.0\.0\.0:(\d+)/.exec(s.banner)?.[1];
    const creds = grpc.credentials.createSsl(certs.read(certs.serverCa), certs.read(certs.clientKey), certs.read(certs.clientCert));
    const c = createClients(`127.0.0.1:${port}`, { "grpc.ssl_target_name_override": "localhost" }, creds);
    expect((await c.getCapabilities({})).cacheCapabilities).toBeDefined();
    c.close();
    expect(await stop(s)).toBe(0);
  });

  test("a non-loopback --tcp without TLS is refused at startup: exit 2, saying what to add", async () => {
    const d = tempDir();
    const r = await lre(["serve", "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--tcp", "0.0.0.0:0"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("--tcp 0.0.0.0:0 is not a loopback address, so lre needs TLS there");
    expect(r.stdout).toBe("");
  });

  test.each([
    ["a malformed line", `# fine\n${TOKEN} read\n${TOKEN.replace("0", "1")} read,root\n`, "line 3: unknown scope \"root\""],
    ["a token too short to be secret", "abc read\n", "line 1: the token is 3 characters"],
  ])("a token file with %s stops startup, naming file and line (exit 1)", async (_what, text, message) => {
    const d = tempDir();
    const tokens = join(d, "tokens");
    writeFileSync(tokens, text);
    const r = await lre(["serve", "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--tcp", "127.0.0.1:0", "--token-file", tokens]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`token file "${tokens}" ${message}`);
  });

  test("a key that does not belong to the certificate stops startup, naming both files (exit 1)", async () => {
    const d = tempDir();
    const r = await lre([
      "serve", "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--tcp", "127.0.0.1:0",
      "--tls-cert", certs.serverCert, "--tls-key", certs.clientKey,
    ]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cannot use "${certs.serverCert}" and "${certs.clientKey}" for TLS`);
  });

  test("a certificate file that is missing or not PEM stops startup (exit 1)", async () => {
    const d = tempDir();
    writeFileSync(join(d, "junk.pem"), "not a certificate");
    for (const [cert, message] of [
      [join(d, "absent.pem"), `--tls-cert: cannot read "${join(d, "absent.pem")}"`],
      [join(d, "junk.pem"), `--tls-cert: "${join(d, "junk.pem")}" is not a PEM file`],
    ] as const) {
      const r = await lre(["serve", "--socket", join(d, "lre.sock"), "--data-dir", join(d, "data"), "--tcp", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", certs.serverKey]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(message);
    }
  });
});
