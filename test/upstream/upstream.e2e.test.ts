/**
 * `lre serve --upstream`: two real lre servers on loopback. The upstream
 * listens on TCP 127.0.0.1 (port chosen by the kernel, reused when it is
 * restarted); the front listens on its Unix socket and names the upstream
 * with --upstream grpc://127.0.0.1:PORT. Clients talk to the front only,
 * except where a test checks what reached the upstream.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LmdbActionCache } from "../../src/ac/lmdb-action-cache";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { ActionResult, Tree } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { type ReapiClients, createClients, rpcError } from "../support/grpc-client";
import { type LreServer, startLre } from "../support/lre-server";
import { FROM_SOURCE, lre } from "../cli/lre-process";

const TIMEOUT_MS = 120_000;

interface Blob {
  readonly digest: { hash: string; sizeBytes: number };
  readonly data: Buffer;
}

function blob(data: Buffer | string): Blob {
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  return { digest: { hash: createHash("sha256").update(bytes).digest("hex"), sizeBytes: bytes.byteLength }, data: bytes };
}

const disposables: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (disposables.length > 0) await disposables.pop()!().catch(() => undefined);
});
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function keep<T extends LreServer>(s: T): T {
  disposables.push(() => s.dispose());
  return s;
}
function clientsFor(address: string): ReapiClients {
  const c = createClients(address);
  disposables.push(async () => c.close());
  return c;
}

async function startUpstream(opts: { dataDir?: string; port?: number } = {}): Promise<LreServer> {
  return keep(
    await startLre({
      ...(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir }),
      ...(opts.port === undefined ? { tcp: true } : { args: ["--no-exec", "--tcp", `127.0.0.1:${opts.port}`] }),
      ...(opts.port === undefined ? { args: ["--no-exec"] } : {}),
    }),
  );
}

async function startFront(upstreamAddress: string, opts: { dataDir?: string; args?: string[] } = {}): Promise<LreServer> {
  return keep(
    await startLre({
      ...(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir }),
      args: ["--no-exec", "--upstream", `grpc://${upstreamAddress}`, ...(opts.args ?? [])],
    }),
  );
}

function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), "lre-up-"));
  dirs.push(d);
  return join(d, "data");
}

/** Polls until `check` holds, failing with `what` after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check().catch(() => false)) return;
    await Bun.sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting until ${what}`);
}

/** An action result with an output file, stdout, and an output directory holding one file, plus every blob it references. */
function sampleResult(tag: string): { action: Blob; result: ActionResult; blobs: Blob[] } {
  const out = blob(`output of ${tag}\n`);
  const stdout = blob(`stdout of ${tag}\n`);
  const inner = blob(`file in the tree of ${tag}\n`);
  const tree = blob(
    Buffer.from(
      Tree.encode(
        Tree.fromPartial({ root: { files: [{ name: "inner.txt", digest: inner.digest, isExecutable: false }] }, children: [] }),
      ).finish(),
    ),
  );
  const action = blob(`action ${tag} ${randomBytes(8).toString("hex")}`);
  const result = ActionResult.fromPartial({
    outputFiles: [{ path: "out.txt", digest: out.digest }],
    outputDirectories: [{ path: "dir", treeDigest: tree.digest }],
    stdoutDigest: stdout.digest,
    exitCode: 0,
  });
  return { action, result, blobs: [out, stdout, inner, tree] };
}

async function upload(c: ReapiClients, blobs: readonly Blob[]): Promise<void> {
  const res = await c.batchUpdateBlobs({ requests: blobs.map((b) => ({ digest: b.digest, data: b.data })) });
  for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
}

async function missingIn(c: ReapiClients, blobs: readonly Blob[]): Promise<string[]> {
  const res = await c.findMissingBlobs({ blobDigests: blobs.map((b) => b.digest) });
  return res.missingBlobDigests.map((d) => d.hash);
}

async function stats(dataDir: string): Promise<{ upstream: { reachable: boolean | null; queued: number; lastError: string | null } | null }> {
  const r = await lre(["stats", "--data-dir", dataDir, "--json"], { cmd: FROM_SOURCE });
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout);
}

describe("read-through", () => {
  test("blobs the front lacks are fetched from the upstream, verified and kept", async () => {
    const up = await startUpstream();
    const front = await startFront(up.tcpAddress!);
    const upC = clientsFor(up.tcpAddress!);
    const frontC = clientsFor(front.socketPath);

    const small = [blob("small one"), blob("small two")];
    const large = blob(randomBytes(3 * 1024 * 1024 + 17));
    await upload(upC, small);
    await upC.writeBlob(formatWriteResourceName("", crypto.randomUUID(), { fn: "sha256", ...large.digest }), large.data, { chunkBytes: 1024 * 1024 });

    // FindMissing through the front: present upstream means copied here, then reported present.
    expect(await missingIn(frontC, [...small, large])).toEqual([]);
    const read = await frontC.batchReadBlobs({ digests: small.map((b) => b.digest) });
    expect(read.responses.map((r) => r.data.toString())).toEqual(["small one", "small two"]);

    const other = blob(randomBytes(2 * 1024 * 1024));
    await upC.writeBlob(formatWriteResourceName("", crypto.randomUUID(), { fn: "sha256", ...other.digest }), other.data, { chunkBytes: 1024 * 1024 });
    // A ByteStream Read of a blob only the upstream has.
    const streamed = await frontC.read({ resourceName: formatReadResourceName("", { fn: "sha256", ...other.digest }) });
    expect(streamed.data.equals(other.data)).toBe(true);

    // Kept locally: with the upstream gone the front still has all of it.
    await up.stop();
    expect(await missingIn(frontC, [...small, large, other])).toEqual([]);
    const again = await frontC.read({ resourceName: formatReadResourceName("", { fn: "sha256", ...large.digest }) });
    expect(again.data.equals(large.data)).toBe(true);
  }, TIMEOUT_MS);

  test("an action result the front lacks comes from the upstream with every blob it references", async () => {
    const up = await startUpstream();
    const front = await startFront(up.tcpAddress!);
    const upC = clientsFor(up.tcpAddress!);
    const frontC = clientsFor(front.socketPath);

    const s = sampleResult("read-through");
    await upload(upC, s.blobs);
    await upC.updateActionResult({ instanceName: "team", actionDigest: s.action.digest, actionResult: s.result });

    const got = await frontC.getActionResult({ instanceName: "team", actionDigest: s.action.digest });
    expect(got.outputFiles[0]?.digest).toEqual(s.result.outputFiles[0]!.digest);
    // Instance names are kept apart upstream too.
    expect((await rpcError(frontC.getActionResult({ instanceName: "other", actionDigest: s.action.digest }))).code).toBe(5);

    // The hit is complete locally: the upstream can go away before the client downloads.
    await up.stop();
    const again = await frontC.getActionResult({ instanceName: "team", actionDigest: s.action.digest });
    expect(again.stdoutDigest).toEqual(s.result.stdoutDigest);
    for (const b of s.blobs) {
      const r = await frontC.read({ resourceName: formatReadResourceName("", { fn: "sha256", ...b.digest }) });
      expect(r.data.equals(b.data)).toBe(true);
    }
  }, TIMEOUT_MS);
});

describe("read-through of a result lre would refuse from a client", () => {
  test("is a miss, with a warning, and neither it nor its blobs are kept", async () => {
    const up = await startUpstream();
    const front = await startFront(up.tcpAddress!);
    const upC = clientsFor(up.tcpAddress!);
    const frontC = clientsFor(front.socketPath);

    // The fault: results written straight into the upstream's action cache,
    // past the checks its UpdateActionResult would apply. One of them is fine,
    // to show results planted this way do reach the front.
    const good = sampleResult("planted, valid");
    const bad = sampleResult("planted, escaping");
    bad.result.outputFiles[0]!.path = "../escape.txt";
    await upload(upC, [...good.blobs, ...bad.blobs]);
    const upAc = await LmdbActionCache.open({ dataDir: up.dataDir });
    try {
      for (const s of [good, bad]) await upAc.put("team", { fn: "sha256", ...s.action.digest }, { result: s.result, origin: "sandbox" });
    } finally {
      await upAc.close();
    }
    // The upstream serves it as it is: only the front's check stands in the way.
    expect((await upC.getActionResult({ instanceName: "team", actionDigest: bad.action.digest })).outputFiles[0]?.path).toBe("../escape.txt");

    expect((await frontC.getActionResult({ instanceName: "team", actionDigest: good.action.digest })).exitCode).toBe(0);
    expect((await rpcError(frontC.getActionResult({ instanceName: "team", actionDigest: bad.action.digest }))).code).toBe(5);
    await eventually("the front logs why", async () => front.output().includes(`read-through: upstream result for ${bad.action.digest.hash}/`));
    expect(front.output()).toContain(`(instance "team") is not valid, treating it as a miss: output_files[0] has path "../escape.txt", which has a ".." segment`);

    // Nothing of it was kept: with the upstream gone it stays a miss, and its own blobs never came over.
    await up.stop();
    expect((await rpcError(frontC.getActionResult({ instanceName: "team", actionDigest: bad.action.digest }))).code).toBe(5);
    const [out, stdout] = bad.blobs;
    expect(await missingIn(frontC, [out!, stdout!])).toEqual([out!.digest.hash, stdout!.digest.hash]);
  }, TIMEOUT_MS);
});

describe("write-behind", () => {
  test("blobs and action results written to the front reach the upstream, blobs first", async () => {
    const up = await startUpstream();
    const front = await startFront(up.tcpAddress!);
    const upC = clientsFor(up.tcpAddress!);
    const frontC = clientsFor(front.socketPath);

    const s = sampleResult("write-behind");
    const large = blob(randomBytes(2 * 1024 * 1024 + 5));
    await upload(frontC, s.blobs);
    await frontC.writeBlob(formatWriteResourceName("", crypto.randomUUID(), { fn: "sha256", ...large.digest }), large.data, { chunkBytes: 1024 * 1024 });
    await frontC.updateActionResult({ instanceName: "ci", actionDigest: s.action.digest, actionResult: s.result });

    await eventually("the upstream has the action result", async () => {
      await upC.getActionResult({ instanceName: "ci", actionDigest: s.action.digest });
      return true;
    });
    // lre's upstream only answers a hit whose blobs are all present: the blobs went first.
    expect(await missingIn(upC, [...s.blobs, large])).toEqual([]);
    await eventually("the queue is empty", async () => (await stats(front.dataDir)).upstream?.queued === 0);
    const st = await stats(front.dataDir);
    expect(st.upstream?.reachable).toBe(true);
  }, TIMEOUT_MS);

  test("queued uploads survive kill -9 of the front and arrive once the upstream is back", async () => {
    const upDir = tempDataDir();
    const frontDir = tempDataDir();
    let up = await startUpstream({ dataDir: upDir });
    const port = Number(up.tcpAddress!.split(":").pop());
    let front = await startFront(up.tcpAddress!, { dataDir: frontDir });
    await up.stop();

    // Upstream down: the front accepts writes and serves its local hits, with no error to the client.
    let frontC = createClients(front.socketPath);
    const s = sampleResult("restart");
    await upload(frontC, s.blobs);
    await frontC.updateActionResult({ actionDigest: s.action.digest, actionResult: s.result });
    const local = await frontC.getActionResult({ actionDigest: s.action.digest });
    expect(local.outputFiles[0]?.path).toBe("out.txt");
    expect(await missingIn(frontC, s.blobs)).toEqual([]);
    expect(await missingIn(frontC, [blob("nobody has this")])).toHaveLength(1);
    frontC.close();

    await eventually("stats report the upstream unreachable", async () => {
      const st = await stats(frontDir);
      return st.upstream?.reachable === false && (st.upstream.queued ?? 0) >= 5 && st.upstream.lastError !== null;
    });

    await front.kill9();
    front = await startFront(`127.0.0.1:${port}`, { dataDir: frontDir });
    const afterRestart = await stats(frontDir);
    expect(afterRestart.upstream?.queued).toBeGreaterThanOrEqual(5);

    up = await startUpstream({ dataDir: upDir, port });
    const upC = clientsFor(up.tcpAddress!);
    await eventually(
      "the upstream has the queued result",
      async () => {
        await upC.getActionResult({ actionDigest: s.action.digest });
        return true;
      },
      60_000,
    );
    expect(await missingIn(upC, s.blobs)).toEqual([]);
    await eventually("the front's queue is empty", async () => (await stats(frontDir)).upstream?.queued === 0);
    frontC = clientsFor(front.socketPath);
    expect((await frontC.getActionResult({ actionDigest: s.action.digest })).exitCode).toBe(0);
  }, TIMEOUT_MS);
});

describe("an unreachable upstream", () => {
  test("never fails a client: misses stay misses, local hits and writes work", async () => {
    const up = await startUpstream();
    const address = up.tcpAddress!;
    await up.stop();
    const front = await startFront(address);
    const c = clientsFor(front.socketPath);

    const started = Date.now();
    expect((await rpcError(c.getActionResult({ actionDigest: blob("unknown action").digest }))).code).toBe(5);
    expect(await missingIn(c, [blob("unknown blob")])).toHaveLength(1);
    const missingRead = await rpcError(c.read({ resourceName: formatReadResourceName("", { fn: "sha256", ...blob("unknown blob").digest }) }));
    expect(missingRead.code).toBe(5);
    // Connection refused is noticed at once; no lookup waits for a timeout.
    expect(Date.now() - started).toBeLessThan(5000);

    const s = sampleResult("offline");
    await upload(c, s.blobs);
    await c.updateActionResult({ actionDigest: s.action.digest, actionResult: s.result });
    expect((await c.getActionResult({ actionDigest: s.action.digest })).exitCode).toBe(0);
    expect(front.output()).toContain("unreachable");
  }, TIMEOUT_MS);
});
