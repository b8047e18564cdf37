import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Digest } from "../../src/digest/digest";
import { GrpcCode } from "../../src/errors";
import { EXECUTE_RESPONSE_TYPE_URL } from "../../src/grpc/execution-service";
import { ExecuteResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { type ExecHarness, startExecHarness } from "./exec-harness";
import { putAction, putBytes, putDirectory } from "./helpers";

/**
 * Staged inputs are hardlinks to one shared file-cache inode per blob
 * (finding H1). These tests run real actions in real sandboxes that try to
 * change that inode, and check that nobody ever sees or caches the damage.
 */

function lastResponse(ops: Operation[]): ExecuteResponse {
  const last = ops[ops.length - 1]!;
  expect(last.done).toBe(true);
  expect(last.response?.typeUrl).toBe(EXECUTE_RESPONSE_TYPE_URL);
  return ExecuteResponse.decode(last.response!.value);
}

let seq = 0;
const salt = () => `shared-${++seq}-${Date.now()}`;

function entryPath(h: ExecHarness, d: Digest): string {
  return join(h.dataDir, "filecache", `sha256-${d.hash}`);
}

describe("shared input files when lre runs as root (default owner)", () => {
  let h: ExecHarness;
  beforeAll(async () => {
    h = await startExecHarness({ jobs: 4 });
  }, 300_000);
  afterAll(async () => {
    await h?.close();
  });

  test("cache entries belong to a uid the sandbox does not map: chmod and write fail, unlink-and-replace changes only the action's own root", async () => {
    expect(process.getuid?.()).toBe(0);
    const sh = h.toolchain.shell;
    const bin = `${h.toolchain.toolchainA}/bin`;
    const blob = await putBytes(h.cas, "original\n");
    const root = await putDirectory(h.cas, { files: [{ name: "shared.txt", digest: blob }] });
    const script = [
      "chmod u+w shared.txt 2>/dev/null && echo chmod-ok || echo chmod-denied",
      "(echo tampered >> shared.txt) 2>/dev/null && echo write-ok || echo write-denied",
      "rm -f shared.txt && echo replaced > shared.txt && cat shared.txt",
    ].join("; ");
    const attacker = await putAction(h.cas, { argv: [sh, "-c", script], env: { PATH: bin } }, root, { salt: salt() });
    const res = lastResponse(await h.clients.execute({ actionDigest: attacker, inlineStdout: true }));
    expect(res.result!.stdoutRaw.toString()).toBe("chmod-denied\nwrite-denied\nreplaced\n");
    expect(res.status?.code ?? 0).toBe(0);

    const st = statSync(entryPath(h, blob));
    expect(st.uid).toBe(65534);
    expect(st.mode & 0o7777).toBe(0o444);
    expect(readFileSync(entryPath(h, blob), "utf8")).toBe("original\n");

    const reader = await putAction(h.cas, { argv: [sh, "-c", "cat shared.txt"], env: { PATH: bin } }, root, { salt: salt() });
    const next = lastResponse(await h.clients.execute({ actionDigest: reader, inlineStdout: true }));
    expect(next.result!.stdoutRaw.toString()).toBe("original\n");
  });
});

describe("shared input files owned by lre itself (as for a non-root lre)", () => {
  let h: ExecHarness;
  beforeAll(async () => {
    h = await startExecHarness({ jobs: 4, fileCacheOwner: null });
  }, 300_000);
  afterAll(async () => {
    await h?.close();
  });

  test("an in-place change with mode and mtime restored is caught (ctime), and fails every running action sharing the input, none cached", async () => {
    const sh = h.toolchain.shell;
    const bin = `${h.toolchain.toolchainA}/bin`;
    const blob = await putBytes(h.cas, "original\n");
    const root = await putDirectory(h.cas, { files: [{ name: "shared.txt", digest: blob }] });
    // Warm the cache, then give the entry a whole-second mtime that busybox's touch -r can restore exactly.
    const warm = await putAction(h.cas, { argv: [sh, "-c", "true"], env: { PATH: bin } }, root, { salt: salt() });
    lastResponse(await h.clients.execute({ actionDigest: warm }));
    utimesSync(entryPath(h, blob), 1_700_000_000, 1_700_000_000);

    const tamper = [
      "sleep 0.5",
      "touch -r shared.txt /tmp/ref",
      "chmod u+w shared.txt",
      "printf 'ORIGINAL\\n' > shared.txt",
      "chmod 444 shared.txt",
      "touch -r /tmp/ref shared.txt",
      "echo done",
    ].join(" && ");
    const culprit = await putAction(h.cas, { argv: [sh, "-c", tamper], env: { PATH: bin } }, root, { salt: salt() });
    const bystander = await putAction(h.cas, { argv: [sh, "-c", "sleep 2; cat shared.txt"], env: { PATH: bin } }, root, { salt: salt() });
    const [b, c] = await Promise.all([
      h.clients.execute({ actionDigest: bystander, inlineStdout: true }).then(lastResponse),
      Bun.sleep(200).then(() => h.clients.execute({ actionDigest: culprit, inlineStdout: true })).then(lastResponse),
    ]);
    expect(c.result!.stdoutRaw.toString()).toBe("done\n"); // the tampering itself succeeded
    for (const r of [c, b]) {
      expect(r.status?.code).toBe(GrpcCode.FAILED_PRECONDITION);
      expect(r.status?.message).toContain("modified an input file in place");
    }
    expect(await h.ac.get("", culprit)).toBeUndefined();
    expect(await h.ac.get("", bystander)).toBeUndefined();

    const reader = await putAction(h.cas, { argv: [sh, "-c", "cat shared.txt"], env: { PATH: bin } }, root, { salt: salt() });
    const next = lastResponse(await h.clients.execute({ actionDigest: reader, inlineStdout: true }));
    expect(next.result!.stdoutRaw.toString()).toBe("original\n");
    expect(next.status?.code ?? 0).toBe(0);
  }, 60_000);

  test("an entry changed behind lre's back is re-hashed before reuse and replaced, also after a restart", async () => {
    const sh = h.toolchain.shell;
    const bin = `${h.toolchain.toolchainA}/bin`;
    const blob = await putBytes(h.cas, "pristine\n");
    const root = await putDirectory(h.cas, { files: [{ name: "in.txt", digest: blob }] });
    const run = async (harness: ExecHarness) => {
      const a = await putAction(harness.cas, { argv: [sh, "-c", "cat in.txt"], env: { PATH: bin } }, root, { salt: salt() });
      return lastResponse(await harness.clients.execute({ actionDigest: a, inlineStdout: true })).result!.stdoutRaw.toString();
    };
    const tamper = () => {
      const p = entryPath(h, blob);
      const before = statSync(p);
      chmodSync(p, 0o644);
      writeFileSync(p, "PRISTINE\n");
      chmodSync(p, before.mode & 0o7777);
      utimesSync(p, before.atime, before.mtime);
    };
    expect(await run(h)).toBe("pristine\n");
    tamper();
    expect(await run(h)).toBe("pristine\n");

    // A crash before anyone noticed: the next process must not trust what it finds either.
    tamper();
    const restarted = await startExecHarness({ dataDir: h.dataDir, cas: h.cas, fileCacheOwner: null });
    try {
      expect(await run(restarted)).toBe("pristine\n");
    } finally {
      await restarted.close();
    }
  }, 60_000);
});
