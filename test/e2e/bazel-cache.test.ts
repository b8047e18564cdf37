/**
 * Debian's Bazel 4.2.3 uses lre as its remote cache, over the Unix socket and
 * over loopback TCP. The fixture (workspaces/cache-chain) has four cacheable
 * actions: a genrule, a genrule with two outputs, a genrule reading both, and
 * a Starlark rule whose output is a directory of nested files.
 *
 * One lre server and one Bazel server serve every test in this file; the
 * tests run in order and each says what it expects of the cache before it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BazelWorkspace, countOf, type ProcessSummary } from "../support/bazel";
import { startLre, type LreServer } from "../support/lre-server";

const FIXTURE = join(import.meta.dir, "workspaces", "cache-chain");
const TARGETS = ["//..."];
/** Cacheable actions in the fixture: greeting, split, joined, tree. */
const ACTIONS = 4;
/** Everything the fixture builds, relative to bazel-bin. */
const OUTPUTS = ["greeting.txt", "upper.txt", "bytes.bin", "joined.txt", "tree"];
/** Generous per-test limit: a few Bazel builds on a loaded 2-core CI machine. Not a timing goal. */
const TEST_TIMEOUT_MS = 300_000;

/** Processes that did real work or came from the cache (Bazel also counts "internal" bookkeeping ones). */
function actionCount(summary: ProcessSummary): number {
  return summary.total - countOf(summary, "internal");
}

let lre: LreServer | undefined;
let guarded: LreServer | undefined;
let ws: BazelWorkspace | undefined;

function server(): LreServer {
  if (lre === undefined) throw new Error("lre did not start; see beforeAll");
  return lre;
}
function workspace(): BazelWorkspace {
  if (ws === undefined) throw new Error("the Bazel workspace was not created; see beforeAll");
  return ws;
}

/** Builds everything from scratch (no local outputs, no local action cache) against lre. */
async function cleanBuild(remoteFlags: readonly string[]) {
  await workspace().clean();
  return workspace().build(TARGETS, remoteFlags);
}

/** Tokens of the guarded server (--token-file): one may write, one may only read. */
const WRITER = "w".repeat(20) + "0123456789abcdef";
const READER = "r".repeat(20) + "0123456789abcdef";

beforeAll(async () => {
  lre = await startLre({ tcp: true });
  const tokens = join(mkdtempSync(join(tmpdir(), "lre-tokens-")), "tokens");
  writeFileSync(tokens, `${WRITER} read,write\n${READER} read\n`, { mode: 0o600 });
  guarded = await startLre({ tcp: true, args: ["--no-exec", "--token-file", tokens] });
  ws = await BazelWorkspace.create({ copyFrom: FIXTURE });
}, 600_000);

afterAll(async () => {
  // Both always run, so neither a Bazel server nor lre outlives the file.
  try {
    await ws?.dispose();
  } finally {
    await lre?.dispose();
    await guarded?.dispose();
  }
}, 120_000);

describe("Bazel 4.2.3 with --remote_cache=unix://<socket>", () => {
  // Over unix://, Bazel 4.2.3 (grpc-java/netty) sends the socket path itself,
  // e.g. "/tmp/x/lre.sock", as the HTTP/2 :authority. lre has to accept that
  // header; a strict HTTP/2 server resets the stream (PROTOCOL_ERROR).
  test("a clean rebuild takes every action from lre and yields byte-identical outputs", async () => {
    const flags = [`--remote_cache=${server().unixUri}`];

    const first = await cleanBuild(flags);
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    expect(actionCount(first.summary)).toBe(ACTIONS);
    const built = workspace().readOutputs(OUTPUTS);
    expect(new TextDecoder().decode(built.get("greeting.txt")?.bytes)).toBe("hello from lre\n");
    expect([...built.keys()].filter((k) => k.startsWith("tree/")).sort()).toEqual([
      "tree/a/b/c/deep.txt",
      "tree/a/copy.txt",
      "tree/d/run.sh",
      "tree/empty.txt",
    ]);

    const second = await cleanBuild(flags);
    expect(countOf(second.summary, "remote cache hit")).toBe(ACTIONS);
    expect(actionCount(second.summary)).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);
  }, TEST_TIMEOUT_MS);

  test("--remote_instance_name keeps action caches apart", async () => {
    const instance = (name: string) => [`--remote_cache=${server().unixUri}`, `--remote_instance_name=${name}`];

    // The default instance already holds every action (previous test); team/a must not see them.
    const firstInA = await cleanBuild(instance("team/a"));
    expect(countOf(firstInA.summary, "remote cache hit")).toBe(0);
    expect(actionCount(firstInA.summary)).toBe(ACTIONS);
    const built = workspace().readOutputs(OUTPUTS);

    const againInA = await cleanBuild(instance("team/a"));
    expect(countOf(againInA.summary, "remote cache hit")).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);

    const firstInB = await cleanBuild(instance("team/b"));
    expect(countOf(firstInB.summary, "remote cache hit")).toBe(0);
    expect(actionCount(firstInB.summary)).toBe(ACTIONS);
  }, TEST_TIMEOUT_MS);
});

describe("Bazel 4.2.3 with --remote_cache=grpc://127.0.0.1:PORT", () => {
  test("a clean rebuild over TCP takes every action from lre", async () => {
    const flags = [`--remote_cache=grpc://${server().tcpAddress}`, "--remote_instance_name=tcp-only"];

    const first = await cleanBuild(flags);
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    expect(actionCount(first.summary)).toBe(ACTIONS);
    const built = workspace().readOutputs(OUTPUTS);

    const second = await cleanBuild(flags);
    expect(countOf(second.summary, "remote cache hit")).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);
  }, TEST_TIMEOUT_MS);

  test("results written over the socket are hits over TCP, and the other way round", async () => {
    const tcp = server().tcpAddress;
    expect(tcp).toBeDefined();
    const viaSocket = [`--remote_cache=${server().unixUri}`, "--remote_instance_name=shared"];
    const viaTcp = [`--remote_cache=grpc://${tcp}`, "--remote_instance_name=shared"];

    const written = await cleanBuild(viaSocket);
    expect(countOf(written.summary, "remote cache hit")).toBe(0);
    const built = workspace().readOutputs(OUTPUTS);

    const readOverTcp = await cleanBuild(viaTcp);
    expect(countOf(readOverTcp.summary, "remote cache hit")).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);
    const joined = built.get("joined.txt")?.bytes ?? new Uint8Array();
    const upperThenBytes = Buffer.concat([Buffer.from("HELLO FROM LRE\n"), Buffer.from([0, 1, 2, 0xff])]);
    expect(Buffer.from(joined.subarray(0, upperThenBytes.length))).toEqual(upperThenBytes);

    const writtenOverTcp = await cleanBuild([`--remote_cache=grpc://${tcp}`, "--remote_instance_name=shared-tcp"]);
    expect(countOf(writtenOverTcp.summary, "remote cache hit")).toBe(0);
    const readOverSocket = await cleanBuild([`--remote_cache=${server().unixUri}`, "--remote_instance_name=shared-tcp"]);
    expect(countOf(readOverSocket.summary, "remote cache hit")).toBe(ACTIONS);
  }, TEST_TIMEOUT_MS);
});

describe("Bazel 4.2.3 with --remote_proxy=unix:<socket>", () => {
  // Another way to reach the socket: Bazel dials the socket but names the
  // target given in --remote_cache as the HTTP/2 :authority. With
  // --remote_cache=unix://... Bazel 4.2.3 sends the socket path as :authority
  // instead, which an HTTP/2 server may reject as malformed.
  test("a clean rebuild through the proxy socket takes every action from lre", async () => {
    const flags = [`--remote_proxy=unix:${server().socketPath}`, "--remote_cache=grpc://localhost", "--remote_instance_name=proxied"];

    const first = await cleanBuild(flags);
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    expect(actionCount(first.summary)).toBe(ACTIONS);
    const built = workspace().readOutputs(OUTPUTS);

    const second = await cleanBuild(flags);
    expect(countOf(second.summary, "remote cache hit")).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);
  }, TEST_TIMEOUT_MS);
});

describe("Bazel 4.2.3 against lre serve --token-file over loopback TCP", () => {
  const guardedFlags = (token: string | undefined) => [
    `--remote_cache=grpc://${guarded?.tcpAddress}`,
    ...(token === undefined ? [] : [`--remote_header=authorization=Bearer ${token}`]),
  ];

  test("a token with write scope fills the cache; a read-only token gets every hit; no token is refused", async () => {
    const first = await cleanBuild(guardedFlags(WRITER));
    expect(countOf(first.summary, "remote cache hit")).toBe(0);
    const built = workspace().readOutputs(OUTPUTS);

    const readOnly = await cleanBuild(guardedFlags(READER));
    expect(countOf(readOnly.summary, "remote cache hit")).toBe(ACTIONS);
    expect(workspace().readOutputs(OUTPUTS)).toEqual(built);

    // Without a token every cache call is UNAUTHENTICATED (GetCapabilities
    // alone is open); Bazel warns and runs everything itself.
    const refused = await cleanBuild(guardedFlags(undefined));
    expect(countOf(refused.summary, "remote cache hit")).toBe(0);
    expect(actionCount(refused.summary)).toBe(ACTIONS);
    expect(refused.stdout + refused.stderr).toContain("UNAUTHENTICATED");
  }, TEST_TIMEOUT_MS);

  test("a read-only token's uploads are refused but its build still succeeds locally", async () => {
    // A fresh instance: nothing cached, so Bazel runs every action and tries to upload.
    const flags = [...guardedFlags(READER), "--remote_instance_name=read-only"];
    const build = await cleanBuild(flags);
    expect(countOf(build.summary, "remote cache hit")).toBe(0);
    expect(actionCount(build.summary)).toBe(ACTIONS);
    expect(build.stdout + build.stderr).toContain("PERMISSION_DENIED");
    // Nothing it tried to write became a hit.
    const again = await cleanBuild(flags);
    expect(countOf(again.summary, "remote cache hit")).toBe(0);
  }, TEST_TIMEOUT_MS);
});
