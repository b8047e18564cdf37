/**
 * remotetool (bazelbuild/remote-apis-sdks, grpc-go) against lre over the Unix
 * socket: a second real client, with a gRPC stack and upload logic of its
 * own. Blobs and directory trees go up and come back byte for byte, and an
 * action result that Bazel stored is readable by remotetool.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BazelWorkspace, countOf, readGrpcLogActionLookups } from "../support/bazel";
import { startLre, type LreServer } from "../support/lre-server";
import { ensureRemotetool, fileDigest, remotetool, type RemotetoolTarget } from "../support/remotetool";

/** Generous per-test limit for a loaded 2-core CI machine. Not a timing goal. */
const TEST_TIMEOUT_MS = 300_000;

let lre: LreServer | undefined;
let tool: string | undefined;
let scratch = "";

function target(instance = ""): RemotetoolTarget {
  if (lre === undefined) throw new Error("lre did not start; see beforeAll");
  return { service: lre.unixUri, instance };
}

/**
 * remotetool retries a call that failed or hit its deadline, logging
 * "call failed ... retrying" only at verbosity 3. These flags make every
 * retry visible, with a per-call deadline far above what a healthy call needs
 * on a slow machine, so a call that stalls shows up as a retry in the log.
 */
const SHOW_RETRIES = { v: "3", rpc_timeouts: "default=30s" };

/** Runs remotetool and fails the test with its stderr unless it exits 0 without retrying a call. */
async function ok(instance: string, operation: string, args: Record<string, string>): Promise<string> {
  if (tool === undefined) throw new Error("remotetool was not built; see beforeAll");
  const result = await remotetool(tool, target(instance), operation, { ...SHOW_RETRIES, ...args });
  const failure =
    result.exitCode !== 0
      ? `exited with ${result.exitCode}`
      : /retrying/.test(result.stderr)
        ? "succeeded only after retrying a failed or stalled call"
        : undefined;
  if (failure !== undefined) {
    throw new Error(`remotetool ${operation} ${failure}\n${result.stderr}\n${lre?.output() ?? ""}`);
  }
  return result.stdout;
}

/** Every entry under dir: files with bytes and executable bit, directories (also empty ones) with a trailing "/". */
function snapshot(dir: string): Record<string, { bytes: string; executable: boolean } | "dir"> {
  const out: Record<string, { bytes: string; executable: boolean } | "dir"> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const child = rel === "" ? name : `${rel}/${name}`;
      const st = statSync(join(dir, child));
      if (st.isDirectory()) {
        out[`${child}/`] = "dir";
        walk(child);
      } else {
        out[child] = { bytes: readFileSync(join(dir, child)).toString("base64"), executable: (st.mode & 0o100) !== 0 };
      }
    }
  };
  walk("");
  return out;
}

beforeAll(async () => {
  // Building remotetool can take a few minutes with a cold Go module cache.
  [lre, tool] = await Promise.all([startLre(), ensureRemotetool()]);
  scratch = mkdtempSync(join(tmpdir(), "lre-remotetool-"));
}, 900_000);

afterAll(async () => {
  try {
    await lre?.dispose();
  } finally {
    if (scratch !== "") rmSync(scratch, { recursive: true, force: true });
  }
}, 120_000);

describe("remotetool over unix://<socket>", () => {
  test("blobs uploaded with upload_blob download byte-identical, each call succeeding the first time", async () => {
    const cases: Record<string, Uint8Array> = {
      "small.txt": new TextEncoder().encode("a small blob\n"),
      // Larger than one 4 MiB gRPC message, so ByteStream has to chunk both ways.
      "large.bin": randomBytes(5 * 1024 * 1024 + 7),
    };
    for (const [name, bytes] of Object.entries(cases)) {
      const source = join(scratch, `up-${name}`);
      writeFileSync(source, bytes);
      const digest = fileDigest(source);
      await ok("", "upload_blob", { path: source });

      const back = join(scratch, `down-${name}`);
      await ok("", "download_blob", { digest, path: back });
      expect(Buffer.compare(readFileSync(back), Buffer.from(bytes))).toBe(0);
    }
  }, TEST_TIMEOUT_MS);

  test("a blob nobody uploaded cannot be downloaded", async () => {
    if (tool === undefined) throw new Error("remotetool was not built");
    const absent = `${"ab".repeat(32)}/12`;
    const result = await remotetool(tool, target(), "download_blob", { digest: absent, path: join(scratch, "absent") });
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toMatch(/NotFound|not found/i);
  }, TEST_TIMEOUT_MS);

  test("a directory tree uploaded with upload_dir downloads identical, under a named instance", async () => {
    const tree = join(scratch, "tree-up");
    mkdirSync(join(tree, "a", "b", "c"), { recursive: true });
    mkdirSync(join(tree, "hollow"));
    writeFileSync(join(tree, "top.txt"), "top\n");
    writeFileSync(join(tree, "a", "b", "c", "deep.txt"), "deep\n");
    writeFileSync(join(tree, "a", "empty"), "");
    writeFileSync(join(tree, "a", "same-as-top.txt"), "top\n");
    writeFileSync(join(tree, "a", "b", "tool.sh"), "#!/bin/sh\necho tool\n");
    chmodSync(join(tree, "a", "b", "tool.sh"), 0o755);
    writeFileSync(join(tree, "a", "b", "noise.bin"), randomBytes(200_000));

    const stats = JSON.parse(await ok("team/a", "upload_dir", { path: tree, json: "-" })) as {
      RootDigest: { Hash: string; Size: number };
      Error: string;
    };
    expect(stats.Error).toBe("");
    const root = `${stats.RootDigest.Hash}/${stats.RootDigest.Size}`;

    const back = join(scratch, "tree-down");
    await ok("team/a", "download_dir", { digest: root, path: back });
    expect(snapshot(back)).toEqual(snapshot(tree));
  }, TEST_TIMEOUT_MS);
});

describe("remotetool reads what Bazel 4.2.3 stored in lre", () => {
  let ws: BazelWorkspace | undefined;

  afterAll(async () => {
    await ws?.dispose();
  }, 120_000);

  test("show_action and download_action_result on an action Bazel cached", async () => {
    if (lre === undefined) throw new Error("lre did not start");
    ws = await BazelWorkspace.create({
      files: {
        "BUILD.bazel": [
          "genrule(",
          '    name = "note",',
          '    outs = ["note.txt"],',
          "    cmd = \"printf 'written by bazel for remotetool\\\\n' > $@\",",
          ")",
          "",
        ].join("\n"),
      },
    });
    const grpcLog = join(ws.root, "grpc.log");
    // The TCP-free route to the socket that Bazel 4.2.3 can use against lre: see bazel-cache.test.ts.
    const remote = [`--remote_proxy=unix:${lre.socketPath}`, "--remote_cache=grpc://localhost", "--remote_instance_name=from-bazel"];

    const stored = await ws.build(["//:note"], remote);
    expect(countOf(stored.summary, "remote cache hit")).toBe(0);
    const expected = readFileSync(ws.binPath("note.txt"));

    // Bazel prints no action digests; its gRPC log records the lookup it made before running the action.
    await ws.clean();
    const hit = await ws.build(["//:note"], [...remote, `--experimental_remote_grpc_log=${grpcLog}`]);
    expect(countOf(hit.summary, "remote cache hit")).toBe(1);
    const lookups = readGrpcLogActionLookups(grpcLog).filter((l) => l.hit);
    expect(lookups.length).toBe(1);
    const lookup = lookups[0];
    if (lookup === undefined) throw new Error("no lookup");
    expect(lookup.instanceName).toBe("from-bazel");
    const action = `${lookup.actionDigest.hash}/${lookup.actionDigest.sizeBytes}`;

    const shown = await ok("from-bazel", "show_action", { digest: action });
    expect(shown).toContain("written by bazel for remotetool"); // the command line
    expect(shown).toContain("Exit code: 0");
    const outputDigest = `${new Bun.CryptoHasher("sha256").update(expected).digest("hex")}/${expected.length}`;
    expect(shown).toContain(`bazel-out/k8-fastbuild/bin/note.txt, digest: ${outputDigest}`);

    const outDir = join(scratch, "action-result");
    await ok("from-bazel", "download_action_result", { digest: action, path: outDir });
    const downloaded = readFileSync(join(outDir, "bazel-out", "k8-fastbuild", "bin", "note.txt"));
    expect(Buffer.compare(downloaded, expected)).toBe(0);
  }, TEST_TIMEOUT_MS);
});

/** Random bytes of any length (getRandomValues fills at most 64 KiB per call). */
function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(length, i + 65536)));
  return out;
}
