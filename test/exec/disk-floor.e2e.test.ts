import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Digest } from "../../src/digest/digest";
import { defaultDiskFloor } from "../../src/exec/disk-floor";
import { GrpcCode } from "../../src/errors";
import { ExecuteResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import type { Operation } from "../../src/proto/google/longrunning/operations";
import { rpcError } from "../support/grpc-client";
import { type ExecHarness, startExecHarness } from "./exec-harness";
import { type CommandSpec, putAction, putDirectory } from "./helpers";

/**
 * S-5: an action writing without bound into its exec root must not fill the
 * disk holding lre's data dir. The data dir sits on a 64 MiB tmpfs of its
 * own, so "the disk fills up" is real but costs the machine nothing; closure
 * views stay on the Nix store's filesystem, where they can be hardlinks.
 */
const MIB = 1024 * 1024;
let root: string;
let mnt: string;
let mounted = false;
let h: ExecHarness;
let sh: string;
let bin: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "lre-disk-floor-"));
  mnt = join(root, "disk");
  mkdirSync(mnt);
  const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt]);
  if (mount.exitCode !== 0) throw new Error(`mounting a tmpfs for the data dir failed (this test runs as root): ${mount.stderr.toString()}`);
  mounted = true;
  h = await startExecHarness({ jobs: 2, dataDir: join(mnt, "data"), viewsDir: join(root, "views") });
  sh = h.toolchain.shell;
  bin = `${h.toolchain.toolchainA}/bin`;
}, 300_000);

afterAll(async () => {
  await h?.close();
  if (mounted) Bun.spawnSync(["umount", mnt]);
  rmSync(root, { recursive: true, force: true });
});

function freeBytes(): number {
  const s = statfsSync(mnt);
  return s.bavail * s.bsize;
}

function floorBytes(): number {
  const s = statfsSync(mnt);
  return defaultDiskFloor(s.blocks * s.bsize);
}

function lastResponse(ops: Operation[]): ExecuteResponse {
  const last = ops[ops.length - 1]!;
  expect(last.done).toBe(true);
  return ExecuteResponse.decode(last.response!.value);
}

async function text(d: { hash: string; sizeBytes: number } | undefined): Promise<string> {
  const digest: Digest = { fn: "sha256", hash: d!.hash, sizeBytes: d!.sizeBytes };
  return new TextDecoder().decode(await h.cas.get(digest));
}

let seq = 0;
async function actionOf(script: string, extra: Partial<CommandSpec> = {}): Promise<Digest> {
  const inputRoot = await putDirectory(h.cas, {});
  return putAction(h.cas, { argv: [sh, "-c", script], env: { PATH: bin }, ...extra }, inputRoot, { salt: `disk-floor-${++seq}-${Date.now()}`, timeoutSeconds: 60 });
}

describe("the free-space floor on the data dir's disk (S-5)", () => {
  test("the default floor is 2% of the disk, at least 1 GiB, at most a tenth of it", () => {
    expect(defaultDiskFloor(1000 * 1024 ** 3)).toBe(Math.floor(20 * 1024 ** 3));
    expect(defaultDiskFloor(20 * 1024 ** 3)).toBe(1024 ** 3);
    expect(defaultDiskFloor(64 * MIB)).toBe(Math.floor(6.4 * MIB));
  });

  test("an action writing until the disk is full is killed with RESOURCE_EXHAUSTED, keeps its stdout, is not cached, and its space comes back", async () => {
    const runaway = await actionOf("echo started; mkdir -p out; i=0; while :; do head -c 1048576 /dev/zero > out/f$i 2>/dev/null || sleep 0.05; i=$((i+1)); done", {
      outputDirectories: ["out"],
    });
    // Runs beside it, writes nothing: the guard must stop the action holding the space, not this one.
    const bystander = await actionOf("sleep 3; echo still here");

    const [runawayOps, bystanderOps] = await Promise.all([
      h.clients.execute({ actionDigest: runaway }),
      h.clients.execute({ actionDigest: bystander, inlineStdout: true }),
    ]);

    const res = lastResponse(runawayOps);
    expect(res.status?.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(res.status?.message).toContain(`disk holding lre's data dir ${h.dataDir}`);
    expect(res.status?.message).toContain("was killed");
    expect(res.message).toContain(res.status!.message);
    expect(res.result).toBeDefined();
    expect(res.result!.exitCode).not.toBe(0);
    expect(await text(res.result!.stdoutDigest)).toBe("started\n");
    // Its outputs filled the disk; they are not copied into the CAS.
    expect(res.result!.outputDirectories).toEqual([]);
    expect((await rpcError(h.clients.getActionResult({ actionDigest: runaway }))).code).toBe(GrpcCode.NOT_FOUND);

    const other = lastResponse(bystanderOps);
    expect(other.status?.code ?? 0).toBe(0);
    expect(other.result!.exitCode).toBe(0);
    expect(other.result!.stdoutRaw.toString()).toBe("still here\n");

    expect(readdirSync(join(h.dataDir, "exec"))).toEqual([]);
    expect(freeBytes()).toBeGreaterThan(60 * MIB);

    // And the server goes on serving.
    const after = lastResponse(await h.clients.execute({ actionDigest: await actionOf("echo ok"), inlineStdout: true }));
    expect(after.status?.code ?? 0).toBe(0);
    expect(after.result!.stdoutRaw.toString()).toBe("ok\n");
  }, 60_000);

  test("while the disk is below the floor no action starts; once space is freed they run again", async () => {
    const ballast = join(mnt, "ballast");
    writeFileSync(ballast, Buffer.alloc(freeBytes() - floorBytes() + MIB));
    expect(freeBytes()).toBeLessThan(floorBytes());
    const actionDigest = await actionOf("echo ran");
    try {
      const res = lastResponse(await h.clients.execute({ actionDigest }));
      expect(res.status?.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
      expect(res.status?.message).toContain("the action was not started");
      expect(res.status?.message).toContain("Free disk space");
      expect(res.result).toBeDefined();
    } finally {
      rmSync(ballast);
    }
    const res = lastResponse(await h.clients.execute({ actionDigest, inlineStdout: true }));
    expect(res.status?.code ?? 0).toBe(0);
    expect(res.result!.stdoutRaw.toString()).toBe("ran\n");
  }, 60_000);
});
