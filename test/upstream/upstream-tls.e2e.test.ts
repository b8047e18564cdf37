/**
 * `--upstream grpcs://…` with `--upstream-ca` and `--upstream-token-file`,
 * against a real lre upstream serving TLS (openssl-made CA) that requires
 * bearer tokens on TCP.
 */
import { afterAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeTestCerts } from "../support/certs";
import { createClients } from "../support/grpc-client";
import { startLre, type LreServer } from "../support/lre-server";

const certs = makeTestCerts();
const servers: LreServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.dispose().catch(() => undefined);
  rmSync(certs.dir, { recursive: true, force: true });
});

function blob(text: string) {
  const data = Buffer.from(text);
  return { digest: { hash: createHash("sha256").update(data).digest("hex"), sizeBytes: data.byteLength }, data };
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await Bun.sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting until ${what}`);
}

test("a grpcs:// upstream checked against --upstream-ca gets the bearer token; a wrong token degrades to local only", async () => {
  const tokens = join(certs.dir, "tokens");
  writeFileSync(tokens, "s3cret-token-0123456789abcdef read,write\n");
  const good = join(certs.dir, "good-token");
  writeFileSync(good, "s3cret-token-0123456789abcdef\n");
  const bad = join(certs.dir, "bad-token");
  writeFileSync(bad, "wrong-token-0123456789abcdef\n");

  // startLre's `tcp` option expects a plaintext grpc:// address line, so the address is read here.
  const up = await startLre({ args: ["--no-exec", "--tcp", "127.0.0.1:0", "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--token-file", tokens] });
  servers.push(up);
  const port = /grpcs:\/\/127\.0\.0\.1:(\d+)/.exec(up.output())?.[1];
  expect(port).toBeDefined();
  const url = `grpcs://127.0.0.1:${port}`;
  const front = await startLre({ args: ["--no-exec", "--upstream", url, "--upstream-ca", certs.serverCa, "--upstream-token-file", good] });
  servers.push(front);
  const wrong = await startLre({ args: ["--no-exec", "--upstream", url, "--upstream-ca", certs.serverCa, "--upstream-token-file", bad] });
  servers.push(wrong);

  const b = blob("through TLS");
  const c = createClients(front.socketPath);
  await c.batchUpdateBlobs({ requests: [{ digest: b.digest, data: b.data }] });
  c.close();

  // Read it back through the second front: it can only come from the upstream, over TLS, with the token.
  const other = await startLre({ args: ["--no-exec", "--upstream", url, "--upstream-ca", certs.serverCa, "--upstream-token-file", good] });
  servers.push(other);
  const oc = createClients(other.socketPath);
  await eventually("the blob reached the upstream and reads through", async () => {
    const r = await oc.batchReadBlobs({ digests: [b.digest] });
    return r.responses[0]?.status?.code === 0 && r.responses[0].data.toString() === "through TLS";
  }).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${front.output()}\n${other.output()}`);
  });
  oc.close();

  // Rejected by the upstream (UNAUTHENTICATED): the client still gets local answers.
  const wc = createClients(wrong.socketPath);
  const missing = await wc.findMissingBlobs({ blobDigests: [b.digest] });
  expect(missing.missingBlobDigests.map((d) => d.hash)).toEqual([b.digest.hash]);
  await wc.batchUpdateBlobs({ requests: [{ digest: blob("local only").digest, data: blob("local only").data }] });
  wc.close();
  await eventually("the rejection is logged", async () => /unauthenticated|UNAUTHENTICATED|token/i.test(wrong.output()));
}, 120_000);
