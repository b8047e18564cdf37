import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { parseTokenFile } from "../../src/grpc/auth/token-file";
import type { TokenTable } from "../../src/grpc/auth/token-table";
import { type ExecutionOutcome, createExecutionService } from "../../src/grpc/execution-service";
import { type RunningServer, startServer } from "../../src/grpc/server";
import { type TlsMaterial, loadTls } from "../../src/grpc/tls";
import { Scheduler } from "../../src/exec/scheduler";
import { type ReapiClients, createClients, grpc, rpcError } from "../support/grpc-client";
import { type TestCerts, makeTestCerts } from "../support/certs";
import { blob } from "./harness";

/**
 * The TCP listener's guards (reliability-targets.md H-2), on a real server
 * over real TLS with certificates openssl made for this run: who may connect
 * (server TLS, client certificates) and what each bearer token may do. The
 * Unix socket stays open to its owner without a token.
 */

const FULL = "f".repeat(32);
const READ_ONLY = "r".repeat(32);
const WRITE_ONLY = "w".repeat(32);
const TOKENS = `# tokens for the auth tests\n${FULL} read,write,execute\n\n${READ_ONLY} read\n${WRITE_ONLY}   write\n`;

let certs: TestCerts;
beforeAll(() => {
  certs = makeTestCerts();
});
afterAll(async () => {
  await rm(certs.dir, { recursive: true, force: true });
});

interface Running {
  server: RunningServer;
  dir: string;
  close(): Promise<void>;
}

/** Execute requests here never reach an executor: they are refused by the guard or by request validation. */
const noExecutor = {
  prepare: () => Promise.reject(new Error("the auth tests never prepare an action")),
  execute: () => Promise.reject(new Error("the auth tests never run an action")),
};

async function start(o: { tls?: TlsMaterial; tokens?: TokenTable }): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), "lre-auth-"));
  const cas = new MemoryBlobStore();
  const ac = new MemoryActionCache();
  const digests = { defaultDigestFn: "sha256" as const };
  const execution = createExecutionService({ cas, ac, digests, executor: noExecutor, scheduler: new Scheduler<ExecutionOutcome>({ jobs: 1 }) });
  const server = await startServer({
    cas,
    ac,
    digests,
    execEnabled: true,
    extraServices: [execution],
    listen: { socketPath: join(dir, "lre.sock"), tcp: { host: "127.0.0.1", port: 0 } },
    ...o,
  });
  return {
    server,
    dir,
    close: async () => {
      await server.shutdown(200);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function tlsClients(address: string, ca: string, client?: { cert: string; key: string }): ReapiClients {
  const creds = grpc.credentials.createSsl(
    certs.read(ca),
    client === undefined ? null : certs.read(client.key),
    client === undefined ? null : certs.read(client.cert),
  );
  // The certificate names 127.0.0.1 too, but Bun refuses an IP address as the TLS server name.
  return createClients(address, { "grpc.ssl_target_name_override": "localhost" }, creds);
}

function deadline(ms = 3000): grpc.CallOptions {
  return { deadline: Date.now() + ms };
}

/** GetCapabilities under a short deadline, so a refused handshake shows as UNAVAILABLE rather than a hang. */
function capabilities(c: ReapiClients): Promise<unknown> {
  return new Promise((resolve, reject) => {
    c.capabilities.getCapabilities({ instanceName: "" } as never, new grpc.Metadata(), deadline(), (err, res) => (err ? reject(err) : resolve(res)));
  });
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

describe("TLS on the TCP listener", () => {
  test("a client trusting the server's CA connects; one trusting another CA refuses the server", async () => {
    const s = await start({ tls: loadTls({ certFile: certs.serverCert, keyFile: certs.serverKey }) });
    try {
      const good = tlsClients(s.server.tcpAddress as string, certs.serverCa);
      expect(await capabilities(good)).toBeDefined();
      const b = blob("over TLS");
      await good.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] });
      expect((await good.read({ resourceName: formatReadResourceName("", b.digest) })).data).toEqual(b.data);
      good.close();

      const wrong = tlsClients(s.server.tcpAddress as string, certs.otherCa);
      expect((await rpcError(capabilities(wrong))).code).toBe(grpc.status.UNAVAILABLE);
      wrong.close();

      const plain = createClients(s.server.tcpAddress as string);
      expect((await rpcError(capabilities(plain))).code).toBe(grpc.status.UNAVAILABLE);
      plain.close();
    } finally {
      await s.close();
    }
  });

  test("with a client CA, only clients holding a certificate it signed get in", async () => {
    const tls = loadTls({ certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: certs.clientCa });
    const s = await start({ tls });
    try {
      const address = s.server.tcpAddress as string;
      const member = tlsClients(address, certs.serverCa, { cert: certs.clientCert, key: certs.clientKey });
      expect(await capabilities(member)).toBeDefined();
      const b = blob("mTLS upload");
      await member.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] });
      expect((await member.findMissingBlobs({ blobDigests: [b.wire] })).missingBlobDigests).toEqual([]);
      member.close();

      const anonymous = tlsClients(address, certs.serverCa);
      expect((await rpcError(capabilities(anonymous))).code).toBe(grpc.status.UNAVAILABLE);
      anonymous.close();

      const stranger = tlsClients(address, certs.serverCa, { cert: certs.strangerCert, key: certs.strangerKey });
      expect((await rpcError(capabilities(stranger))).code).toBe(grpc.status.UNAVAILABLE);
      stranger.close();

      // The server keeps serving after refusing handshakes.
      const again = tlsClients(address, certs.serverCa, { cert: certs.clientCert, key: certs.clientKey });
      expect(await capabilities(again)).toBeDefined();
      again.close();
    } finally {
      await s.close();
    }
  });
});

describe("bearer tokens on TCP", () => {
  let s: Running;
  const tokens = () => parseTokenFile(TOKENS, "test tokens");
  beforeAll(async () => {
    s = await start({ tls: loadTls({ certFile: certs.serverCert, keyFile: certs.serverKey }), tokens: tokens() });
  });
  afterAll(async () => {
    await s.close();
  });
  const client = () => tlsClients(s.server.tcpAddress as string, certs.serverCa);

  const b = blob("guarded blob");
  const action = blob("an action");
  /** One call per guarded RPC, each with the given metadata. */
  const calls = (c: ReapiClients, md: () => grpc.Metadata): Record<string, () => Promise<unknown>> => ({
    FindMissingBlobs: () => c.findMissingBlobs({ blobDigests: [b.wire] }, md()),
    BatchReadBlobs: () => c.batchReadBlobs({ digests: [b.wire] }, md()),
    GetTree: () => c.getTree({ rootDigest: b.wire }, md()),
    Read: () => c.read({ resourceName: formatReadResourceName("", b.digest) }, md()),
    QueryWriteStatus: () => c.queryWriteStatus(formatWriteResourceName("", "q", b.digest), md()),
    GetActionResult: () => c.getActionResult({ actionDigest: action.wire }, md()),
    BatchUpdateBlobs: () => c.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] }, md()),
    Write: () => c.write([{ resourceName: formatWriteResourceName("", "w", b.digest), writeOffset: 0, data: b.data, finishWrite: true }], md()),
    UpdateActionResult: () => c.updateActionResult({ actionDigest: action.wire, actionResult: { exitCode: 0 } }, md()),
    Execute: () => c.execute({ actionDigest: action.wire }, md()),
    WaitExecution: () => c.waitExecution("no-such-operation", md()),
  });
  const READS = ["FindMissingBlobs", "BatchReadBlobs", "GetTree", "Read", "QueryWriteStatus", "GetActionResult"];
  const WRITES = ["BatchUpdateBlobs", "Write", "UpdateActionResult"];
  const EXECUTES = ["Execute", "WaitExecution"];

  /** The status code of a call: OK, or the error's code. */
  async function codeOf(call: () => Promise<unknown>): Promise<number> {
    try {
      await call();
      return grpc.status.OK;
    } catch (err) {
      return (err as grpc.ServiceError).code;
    }
  }

  /** A status the guard never gives: the call reached its service (the blob, tree or operation may not exist). */
  const passedGuard = (code: number) => code !== grpc.status.UNAUTHENTICATED && code !== grpc.status.PERMISSION_DENIED && code !== grpc.status.UNAVAILABLE;

  test("without a token every RPC but GetCapabilities is UNAUTHENTICATED", async () => {
    const c = client();
    expect(await capabilities(c)).toBeDefined();
    for (const [name, call] of Object.entries(calls(c, () => new grpc.Metadata()))) {
      const err = await rpcError(call());
      expect([name, err.code]).toEqual([name, grpc.status.UNAUTHENTICATED]);
      expect(err.details).toContain("authorization: Bearer");
    }
    c.close();
  });

  test("an unknown token, a prefix of a good one or a non-Bearer header is UNAUTHENTICATED", async () => {
    const c = client();
    const wrong = () => bearer("x".repeat(32));
    for (const [name, call] of Object.entries(calls(c, wrong))) expect([name, await codeOf(call)]).toEqual([name, grpc.status.UNAUTHENTICATED]);
    const almost = () => bearer(FULL.slice(0, -1));
    expect(await codeOf(calls(c, almost).FindMissingBlobs as () => Promise<unknown>)).toBe(grpc.status.UNAUTHENTICATED);
    const basic = new grpc.Metadata();
    basic.set("authorization", `Basic ${FULL}`);
    expect(await codeOf(() => c.findMissingBlobs({ blobDigests: [b.wire] }, basic))).toBe(grpc.status.UNAUTHENTICATED);
    c.close();
  });

  test("a read-only token reads but may not write or execute", async () => {
    const c = client();
    const all = calls(c, () => bearer(READ_ONLY));
    for (const name of [...WRITES, ...EXECUTES]) {
      const err = await rpcError((all[name] as () => Promise<unknown>)());
      expect([name, err.code]).toEqual([name, grpc.status.PERMISSION_DENIED]);
      expect(err.details).toContain("read");
    }
    for (const name of READS) expect([name, passedGuard(await codeOf(all[name] as () => Promise<unknown>))]).toEqual([name, true]);
    c.close();
  });

  test("a write-only token writes but may not read", async () => {
    const c = client();
    const all = calls(c, () => bearer(WRITE_ONLY));
    for (const name of WRITES) expect([name, await codeOf(all[name] as () => Promise<unknown>)]).toEqual([name, grpc.status.OK]);
    for (const name of [...READS, ...EXECUTES]) {
      expect([name, await codeOf(all[name] as () => Promise<unknown>)]).toEqual([name, grpc.status.PERMISSION_DENIED]);
    }
    c.close();
  });

  test("a token with every scope passes the guard on every RPC", async () => {
    const c = client();
    const all = calls(c, () => bearer(FULL));
    for (const name of WRITES) expect([name, await codeOf(all[name] as () => Promise<unknown>)]).toEqual([name, grpc.status.OK]);
    // Reads past the guard may still find nothing; Execute and WaitExecution reach the
    // Execution service, which finds no such action or operation.
    for (const name of [...READS, ...EXECUTES]) expect([name, passedGuard(await codeOf(all[name] as () => Promise<unknown>))]).toEqual([name, true]);
    expect((await c.read({ resourceName: formatReadResourceName("", b.digest) }, bearer(FULL))).data).toEqual(b.data);
    expect((await c.getActionResult({ actionDigest: action.wire }, bearer(FULL))).exitCode).toBe(0);
    c.close();
  });

  test("the Unix socket needs no token", async () => {
    const c = createClients(s.server.socketPath as string);
    const all = calls(c, () => new grpc.Metadata());
    for (const name of WRITES) expect([name, await codeOf(all[name] as () => Promise<unknown>)]).toEqual([name, grpc.status.OK]);
    for (const name of [...READS, ...EXECUTES]) expect([name, passedGuard(await codeOf(all[name] as () => Promise<unknown>))]).toEqual([name, true]);
    c.close();
  });

  test("tokens also guard plaintext loopback TCP", async () => {
    const plain = await start({ tokens: tokens() });
    try {
      const c = createClients(plain.server.tcpAddress as string);
      expect(await capabilities(c)).toBeDefined();
      expect((await rpcError(c.findMissingBlobs({ blobDigests: [b.wire] }))).code).toBe(grpc.status.UNAUTHENTICATED);
      expect((await c.findMissingBlobs({ blobDigests: [b.wire] }, bearer(READ_ONLY))).missingBlobDigests).toHaveLength(1);
      c.close();
    } finally {
      await plain.close();
    }
  });
});
