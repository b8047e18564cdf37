/**
 * `lre serve --upstream ... --execute-upstream never|fallback|always`: where an
 * Execute sent to the front actually runs. Two real lre servers with real
 * executors on loopback: the upstream on TCP 127.0.0.1, the front on its Unix
 * socket. Actions run in bubblewrap against the Nix test toolchain.
 *
 * Which server ran an action is read from the executor counts each server
 * publishes in its data dir (what `lre stats` shows as "N done"), and from
 * the operation name: forwarded operations are named `upstream/...`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readExecutorStatus } from "../../src/cli/executor-status";
import { GrpcCode } from "../../src/errors";
import { formatReadResourceName } from "../../src/digest/resource-name";
import { EXECUTE_RESPONSE_TYPE_URL } from "../../src/grpc/execution-service";
import { Action, Command, Directory, ExecuteResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { PreconditionFailure } from "../../src/proto/google/rpc/error_details";
import { command } from "../exec/helpers";
import { type ReapiClients, createClients, rpcError, statusDetails } from "../support/grpc-client";
import { type LreServer, startLre } from "../support/lre-server";
import { type NixToolchain, ensureNixToolchain } from "../support/nix-fixture";

const TIMEOUT_MS = 60_000;
/** Servers publish executor counts about once a second; waiting longer than that shows a count that did not move. */
const PUBLISH_INTERVAL_MS = 1000;

type Mode = "never" | "fallback" | "always";

interface Blob {
  readonly digest: { hash: string; sizeBytes: number };
  readonly data: Buffer;
}

function blob(data: Buffer | string): Blob {
  const bytes = typeof data === "string" ? Buffer.from(data) : data;
  return { digest: { hash: createHash("sha256").update(bytes).digest("hex"), sizeBytes: bytes.byteLength }, data: bytes };
}

const subject = (b: Blob): string => `blobs/${b.digest.hash}/${b.digest.sizeBytes}`;

let nix: NixToolchain;
/** One upstream with an executor, shared by the tests that leave it running. */
let shared: LreServer;

beforeAll(async () => {
  nix = await ensureNixToolchain();
  shared = await startLre({ tcp: true });
}, 300_000);

afterAll(async () => {
  await shared?.dispose();
}, 60_000);

const disposables: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (disposables.length > 0) await disposables.pop()!().catch(() => undefined);
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
function tempDataDir(): string {
  const d = mkdtempSync(join(tmpdir(), "lre-exup-"));
  disposables.push(async () => rmSync(d, { recursive: true, force: true }));
  return join(d, "data");
}

async function startFront(upstreamAddress: string, mode: Mode | undefined, opts: { dataDir?: string } = {}): Promise<LreServer> {
  return keep(
    await startLre({
      ...(opts.dataDir === undefined ? {} : { dataDir: opts.dataDir }),
      args: ["--upstream", `grpc://${upstreamAddress}`, ...(mode === undefined ? [] : ["--execute-upstream", mode])],
    }),
  );
}

/** Operations finished by the executor of the server running on `dataDir`. */
function executed(dataDir: string): number {
  const s = readExecutorStatus(dataDir);
  if (s === undefined) throw new Error(`no running server publishes executor status in ${dataDir}`);
  return s.done;
}

/** Polls until `check` holds, failing with `what` after `ms`. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await Promise.resolve().then(check).catch(() => false)) return;
    await Bun.sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting until ${what}`);
}

/**
 * One action: `cat in.txt > out.txt` on an input only this action has, so
 * its output proves which input it read. The salt keeps it out of every
 * action cache until it has run.
 */
interface TestAction {
  readonly action: Blob;
  readonly command: Blob;
  readonly root: Blob;
  readonly input: Blob;
  /** Every blob Execute needs, Action last. */
  readonly blobs: readonly Blob[];
}

function makeAction(tag: string): TestAction {
  const input = blob(`input of ${tag} ${randomBytes(8).toString("hex")}\n`);
  const root = blob(Buffer.from(Directory.encode(Directory.fromPartial({ files: [{ name: "in.txt", digest: input.digest }] })).finish()));
  const cmd = blob(
    Buffer.from(
      Command.encode(
        command({ argv: [nix.shell, "-c", `cat in.txt > out.txt && echo ran ${tag}`], env: { PATH: `${nix.toolchainA}/bin` }, outputFiles: ["out.txt"] }),
      ).finish(),
    ),
  );
  const action = blob(
    Buffer.from(Action.encode(Action.fromPartial({ commandDigest: cmd.digest, inputRootDigest: root.digest, salt: randomBytes(16) })).finish()),
  );
  return { action, command: cmd, root, input, blobs: [input, root, cmd, action] };
}

async function upload(c: ReapiClients, blobs: readonly Blob[]): Promise<void> {
  const res = await c.batchUpdateBlobs({ requests: blobs.map((b) => ({ digest: b.digest, data: b.data })) });
  for (const r of res.responses) expect(r.status?.code ?? 0).toBe(0);
}

async function missingIn(c: ReapiClients, blobs: readonly Blob[]): Promise<string[]> {
  const res = await c.findMissingBlobs({ blobDigests: blobs.map((b) => b.digest) });
  return res.missingBlobDigests.map((d) => d.hash);
}

function finalResponse(ops: readonly Operation[]): ExecuteResponse {
  const last = ops[ops.length - 1];
  expect(last?.done).toBe(true);
  expect(last?.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
  return ExecuteResponse.decode(last!.response!.value);
}

/** Checks the action succeeded and that out.txt, read through `c`, is its input. */
async function expectRanOk(c: ReapiClients, a: TestAction, ops: readonly Operation[]): Promise<ExecuteResponse> {
  const res = finalResponse(ops);
  expect(res.status?.code ?? 0).toBe(0);
  expect(res.result?.exitCode).toBe(0);
  const out = res.result!.outputFiles.find((f) => f.path === "out.txt");
  expect(out?.digest).toEqual(a.input.digest);
  const read = await c.read({ resourceName: formatReadResourceName("", { fn: "sha256", ...out!.digest! }) });
  expect(read.data.equals(a.input.data)).toBe(true);
  return res;
}

function expectNames(ops: readonly Operation[], forwarded: boolean): void {
  expect(ops.length).toBeGreaterThan(0);
  for (const op of ops) {
    if (forwarded) expect(op.name).toStartWith("upstream/");
    else expect(op.name).not.toStartWith("upstream/");
  }
}

/** The executor count of `dataDir` once it has had time to publish any change, expected to be `n`. */
async function expectStillExecuted(dataDir: string, n: number): Promise<void> {
  await Bun.sleep(PUBLISH_INTERVAL_MS + 300);
  expect(executed(dataDir)).toBe(n);
}

describe("--execute-upstream always", () => {
  test("runs the action upstream after uploading the inputs only the front had; WaitExecution and cache hits go through the front", async () => {
    const upC = clientsFor(shared.tcpAddress!);
    const a = makeAction("always");

    // The inputs reach the front's store while it fronts nothing, so no
    // write-behind queue holds them: only Execute can take them upstream.
    const frontDir = tempDataDir();
    const plain = keep(await startLre({ dataDir: frontDir, args: ["--no-exec"] }));
    const plainC = createClients(plain.socketPath);
    await upload(plainC, a.blobs);
    plainC.close();
    await plain.stop();

    const front = await startFront(shared.tcpAddress!, "always", { dataDir: frontDir });
    const frontC = clientsFor(front.socketPath);
    expect(await missingIn(upC, a.blobs)).toHaveLength(a.blobs.length);
    const upBefore = executed(shared.dataDir);

    const ops = await frontC.execute({ actionDigest: a.action.digest });
    expectNames(ops, true);
    const first = await expectRanOk(frontC, a, ops);
    expect(first.cachedResult).toBe(false);
    expect(await missingIn(upC, a.blobs)).toEqual([]);
    await eventually("the upstream's executor counts the action", () => executed(shared.dataDir) === upBefore + 1);

    // The result is the upstream's, readable through the front.
    const viaFront = await frontC.getActionResult({ actionDigest: a.action.digest });
    expect(viaFront.outputFiles.map((f) => f.digest)).toEqual([a.input.digest]);

    // WaitExecution on the name the front handed out reaches the upstream's operation.
    const waited = await frontC.waitExecution(ops[0]!.name);
    expect(waited.map((o) => o.name)).toEqual([ops[0]!.name]);
    expect(finalResponse(waited).result?.outputFiles[0]?.digest).toEqual(a.input.digest);

    // Execute again: the upstream answers from its action cache.
    const again = await frontC.execute({ actionDigest: a.action.digest });
    expectNames(again, true);
    expect((await expectRanOk(frontC, a, again)).cachedResult).toBe(true);

    await expectStillExecuted(shared.dataDir, upBefore + 1);
    expect(executed(front.dataDir)).toBe(0);
  }, TIMEOUT_MS);

  test("inputs nobody has are FAILED_PRECONDITION with MISSING violations, whichever server finds them missing", async () => {
    const upC = clientsFor(shared.tcpAddress!);
    const front = await startFront(shared.tcpAddress!, "always");
    const frontC = clientsFor(front.socketPath);
    const upBefore = executed(shared.dataDir);

    // The front finds it while pushing inputs: the file is neither here nor upstream.
    const a = makeAction("missing-file");
    await upload(frontC, [a.root, a.command, a.action]);
    const err = await rpcError(frontC.execute({ actionDigest: a.action.digest }));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    const failure = PreconditionFailure.decode(statusDetails(err)!.details[0]!.value);
    expect(failure.violations.map((v) => [v.type, v.subject])).toEqual([["MISSING", subject(a.input)]]);

    // The upstream finds it: Action and Command are only upstream (so the
    // front forwards without looking inside), the input root is nowhere.
    const b = makeAction("missing-root");
    await upload(upC, [b.command, b.action]);
    const upErr = await rpcError(frontC.execute({ actionDigest: b.action.digest }));
    expect(upErr.code).toBe(GrpcCode.FAILED_PRECONDITION);
    const upFailure = PreconditionFailure.decode(statusDetails(upErr)!.details[0]!.value);
    expect(upFailure.violations.map((v) => [v.type, v.subject])).toEqual([["MISSING", subject(b.root)]]);

    // Bazel's retry: upload what was missing to the front and Execute again.
    await upload(frontC, [a.input]);
    await expectRanOk(frontC, a, await frontC.execute({ actionDigest: a.action.digest }));
    await eventually("the upstream's executor counts the retried action", () => executed(shared.dataDir) === upBefore + 1);
  }, TIMEOUT_MS);

  test("an unreachable upstream is an error the client sees; nothing runs locally", async () => {
    const gone = await startLre({ tcp: true, args: ["--no-exec"] });
    const address = gone.tcpAddress!;
    await gone.dispose();
    const front = await startFront(address, "always");
    const frontC = clientsFor(front.socketPath);

    const a = makeAction("always-down");
    await upload(frontC, a.blobs);
    const err = await rpcError(frontC.execute({ actionDigest: a.action.digest }));
    expect(err.code).toBe(GrpcCode.UNAVAILABLE);
    expect(err.details).toContain(address);
    await expectStillExecuted(front.dataDir, 0);
  }, TIMEOUT_MS);
});

describe("--execute-upstream fallback", () => {
  test("runs upstream while it is up, and locally once it is gone", async () => {
    const up = keep(await startLre({ tcp: true }));
    const front = await startFront(up.tcpAddress!, "fallback");
    const frontC = clientsFor(front.socketPath);

    const a = makeAction("fallback-up");
    await upload(frontC, a.blobs);
    const ops = await frontC.execute({ actionDigest: a.action.digest });
    expectNames(ops, true);
    await expectRanOk(frontC, a, ops);
    await eventually("the upstream's executor counts the action", () => executed(up.dataDir) === 1);

    await up.stop();
    const b = makeAction("fallback-down");
    await upload(frontC, b.blobs);
    const local = await frontC.execute({ actionDigest: b.action.digest });
    expectNames(local, false);
    await expectRanOk(frontC, b, local);
    await eventually("the front's executor counts the action", () => executed(front.dataDir) === 1);
    // The local operation is the front's own to wait on.
    const waited = await frontC.waitExecution(local[0]!.name);
    expect(finalResponse(waited).result?.exitCode).toBe(0);
  }, TIMEOUT_MS);

  test("runs locally when the upstream has no executor (UNIMPLEMENTED)", async () => {
    const up = keep(await startLre({ tcp: true, args: ["--no-exec"] }));
    const front = await startFront(up.tcpAddress!, "fallback");
    const frontC = clientsFor(front.socketPath);

    const a = makeAction("fallback-unimplemented");
    await upload(frontC, a.blobs);
    const ops = await frontC.execute({ actionDigest: a.action.digest });
    expectNames(ops, false);
    await expectRanOk(frontC, a, ops);
    await eventually("the front's executor counts the action", () => executed(front.dataDir) === 1);
    // Offered upstream and refused, not skipped for a cooldown.
    expect(front.output()).toMatch(/execute: the upstream cannot take the action \(.*\); running it locally/);
  }, TIMEOUT_MS);
});

describe("--execute-upstream never (the default)", () => {
  test("runs locally with an upstream configured; the result is shared upstream by write-behind", async () => {
    const upC = clientsFor(shared.tcpAddress!);
    const front = await startFront(shared.tcpAddress!, undefined);
    const frontC = clientsFor(front.socketPath);
    const upBefore = executed(shared.dataDir);

    const a = makeAction("never");
    await upload(frontC, a.blobs);
    const ops = await frontC.execute({ actionDigest: a.action.digest });
    expectNames(ops, false);
    await expectRanOk(frontC, a, ops);
    await eventually("the front's executor counts the action", () => executed(front.dataDir) === 1);
    await eventually("the upstream has the front's result", async () => {
      await upC.getActionResult({ actionDigest: a.action.digest });
      return true;
    });
    await expectStillExecuted(shared.dataDir, upBefore);
  }, TIMEOUT_MS);
});
