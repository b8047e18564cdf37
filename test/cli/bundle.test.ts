/**
 * `lre export` and `lre import` as users run them: separate processes on real
 * data dirs, beside a running `lre serve` or without one.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fnToWire, toWire } from "../../src/digest/digest";
import { type Fixture, editBundle, fillStore, openStore, readAll } from "../bundle/fixture";
import { createClients } from "../support/grpc-client";
import { lre, startServe, stop, tempDir as makeTempDir } from "./lre-process";

const roots: string[] = [];
function tempDir(): string {
  const d = makeTempDir("lre-bundle-cli-");
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function filledDataDir(): Promise<{ dir: string; fx: Fixture }> {
  const dir = join(tempDir(), "data");
  const s = await openStore(dir);
  try {
    return { dir, fx: await fillStore(s) };
  } finally {
    await s.close();
  }
}

async function statsOf(dataDir: string): Promise<Record<string, unknown>> {
  const r = await lre(["stats", "--json", "--data-dir", dataDir]);
  expect(r.exitCode).toBe(0);
  const { blobs, bytes, acEntries, acFromSandbox, acFromClients } = JSON.parse(r.stdout) as Record<string, unknown>;
  return { blobs, bytes, acEntries, acFromSandbox, acFromClients };
}

describe("lre export and lre import", () => {
  test("round trip with --trust-origin: the empty data dir ends up with the same blobs and action results, origins kept", async () => {
    const { dir, fx } = await filledDataDir();
    const file = join(tempDir(), "cache.lrebundle");
    const exported = await lre(["export", file, "--data-dir", dir]);
    expect(exported.stderr).toBe("");
    expect(exported.exitCode).toBe(0);
    expect(exported.stdout).toMatch(new RegExp(`^exported ${fx.blobs.size} blobs \\(3(\\.\\d+)? MiB\\) and 2 action results to ${file} \\(3(\\.\\d+)? MiB\\)\\n$`));

    const target = join(tempDir(), "empty");
    const imported = await lre(["import", file, "--data-dir", target, "--trust-origin"]);
    expect(imported.stderr).toBe("");
    expect(imported.stdout).toMatch(new RegExp(`^added ${fx.blobs.size} blobs \\(3(\\.\\d+)? MiB\\) and 2 action results; 0 already present\\n$`));
    expect(await statsOf(target)).toEqual(await statsOf(dir));

    const s = await openStore(target);
    try {
      for (const { digest, data } of fx.blobs.values()) expect(Buffer.from(await readAll(s, digest)).equals(data)).toBe(true);
      expect(await s.ac.get("", fx.actionA)).toEqual({ result: fx.resultA, origin: "sandbox" });
      expect(await s.ac.get("team/b", fx.actionB)).toEqual({ result: fx.resultB, origin: "client" });
    } finally {
      await s.close();
    }

    const again = await lre(["import", file, "--data-dir", target]);
    expect(again.stdout).toBe(`added 0 blobs (0 B) and 0 action results; ${fx.blobs.size + 2} already present\n`);
  });

  test("without --trust-origin every imported action result counts as a client upload", async () => {
    const { dir } = await filledDataDir();
    const file = join(tempDir(), "cache.lrebundle");
    expect((await lre(["export", file, "--data-dir", dir])).exitCode).toBe(0);
    expect(await statsOf(dir)).toMatchObject({ acFromSandbox: 1, acFromClients: 1 });
    const target = join(tempDir(), "empty");
    expect((await lre(["import", file, "--data-dir", target])).exitCode).toBe(0);
    expect(await statsOf(target)).toEqual({ ...(await statsOf(dir)), acFromSandbox: 0, acFromClients: 2 });
  });

  test("a bundle holding one action result lre would refuse from a client is refused whole, exit 1, naming the entry", async () => {
    const { dir, fx } = await filledDataDir();
    const file = join(tempDir(), "good");
    expect((await lre(["export", file, "--data-dir", dir])).exitCode).toBe(0);
    // An output path of action A rewritten to climb out of the working directory, checksum recomputed.
    const crafted = join(tempDir(), "crafted");
    writeFileSync(crafted, editBundle(readFileSync(file), "big.bin", "../.bin"));
    const target = join(tempDir(), "dst");
    const r = await lre(["import", crafted, "--data-dir", target, "--trust-origin"]);
    expect({ exitCode: r.exitCode, stdout: r.stdout }).toEqual({ exitCode: 1, stdout: "" });
    expect(r.stderr).toStartWith(`lre: bundle "${crafted}" holds an action result lre does not accept (the one at byte `);
    expect(r.stderr).toContain(`for action ${fx.actionA.hash}/${fx.actionA.sizeBytes} in instance ""): output_files[1] has path "../.bin", which has a ".." segment`);
    expect(r.stderr).toEndWith("; nothing was imported\n");
    expect(await statsOf(target)).toMatchObject({ blobs: 0, acEntries: 0 });
  });

  test("--since and --action choose what goes in", async () => {
    const { dir, fx } = await filledDataDir();
    const recent = await lre(["export", join(tempDir(), "recent"), "--data-dir", dir, "--since", "1h30m"]);
    expect(recent.stdout).toStartWith(`exported ${fx.blobs.size} blobs`);

    const one = join(tempDir(), "one");
    const a = await lre(["export", one, "--data-dir", dir, "--action", `${fx.actionA.hash}/${fx.actionA.sizeBytes}`]);
    expect(a.stdout).toStartWith(`exported ${fx.neededByA.length + fx.inspectA.length} blobs`);
    expect(a.stdout).toContain("and 1 action results");
    const b = await lre(["export", join(tempDir(), "b"), "--data-dir", dir, "--action", `blake3/${fx.actionB.hash}/${fx.actionB.sizeBytes}`]);
    expect(b.stdout).toStartWith("exported 1 blobs");

    const target = join(tempDir(), "dst");
    expect((await lre(["import", one, "--data-dir", target])).exitCode).toBe(0);
    expect(await statsOf(target)).toMatchObject({ blobs: fx.neededByA.length + fx.inspectA.length, acEntries: 1, acFromClients: 1 });
  });

  test("mistakes on the command line exit 2 with usage; failures exit 1 naming the problem", async () => {
    const { dir } = await filledDataDir();
    const usage = [
      [["export", "--data-dir", dir], '"lre export" needs the bundle FILE'],
      [["export", "a", "b", "--data-dir", dir], "takes one FILE"],
      [["export", "x", "--since", "2 hours"], 'bad value for "--since"'],
      [["export", "x", "--action", "abc/12"], 'bad value for "--action"'],
      [["export", "x", "--since", "1h", "--action", `${"a".repeat(64)}/1`], "not both"],
      [["import"], '"lre import" needs the bundle FILE'],
    ] as const;
    for (const [args, message] of usage) {
      const r = await lre([...args]);
      expect({ args, exitCode: r.exitCode }).toEqual({ args, exitCode: 2 });
      expect(r.stderr).toContain(message);
      expect(r.stderr).toContain(`usage: lre ${args[0]} FILE [flags]`);
    }
    const unknown = await lre(["export", join(tempDir(), "x"), "--data-dir", dir, "--action", `${"a".repeat(64)}/1`]);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain(`has no result for action ${"a".repeat(64)}/1`);
    const noStore = await lre(["export", join(tempDir(), "x"), "--data-dir", join(tempDir(), "nothing-here")]);
    expect(noStore.exitCode).toBe(1);
    expect(noStore.stderr).toContain("holds no lre store");
    const missing = await lre(["import", join(tempDir(), "absent.lrebundle"), "--data-dir", join(tempDir(), "d")]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain("absent.lrebundle");
  });

  test("a bundle with one flipped byte or cut short is refused whole, exit 1, and the store is unchanged", async () => {
    const { dir, fx } = await filledDataDir();
    const file = join(tempDir(), "good");
    expect((await lre(["export", file, "--data-dir", dir])).exitCode).toBe(0);
    const good = readFileSync(file);
    const target = join(tempDir(), "dst");
    // Something already there, to see it is neither lost nor joined by anything.
    const one = join(tempDir(), "one");
    await lre(["export", one, "--data-dir", dir, "--action", `blake3/${fx.actionB.hash}/${fx.actionB.sizeBytes}`]);
    expect((await lre(["import", one, "--data-dir", target])).exitCode).toBe(0);
    const before = await statsOf(target);

    const cases: [string, Buffer, string][] = [
      ["blob body", flipAt(good, good.indexOf(Buffer.from(fx.blobs.get("stdout")!.data)) + 2), "does not match its digest"],
      ["header", flipAt(good, good.indexOf(Buffer.from("team/b")) + 1), "checksum does not match"],
      ["trailer", flipAt(good, good.length - 20), "checksum does not match"],
      ["truncated", good.subarray(0, good.length - 100), "truncated"],
    ];
    for (const [what, bytes, reason] of cases) {
      const damaged = join(tempDir(), `damaged-${what}`);
      writeFileSync(damaged, bytes);
      const r = await lre(["import", damaged, "--data-dir", target]);
      expect({ what, exitCode: r.exitCode, stdout: r.stdout }).toEqual({ what, exitCode: 1, stdout: "" });
      expect(r.stderr).toStartWith(`lre: bundle "${damaged}" is damaged: `);
      expect(r.stderr).toContain(reason);
      expect(r.stderr).toEndWith("; nothing was imported\n");
      expect(await statsOf(target)).toEqual(before);
    }
  });

  test("work beside a running server, which then serves what was imported", async () => {
    const src = await filledDataDir();
    const d = tempDir();
    const srcSock = join(d, "src.sock");
    const dstSock = join(d, "dst.sock");
    const target = join(d, "dst");
    const srcServer = await startServe(["--socket", srcSock, "--data-dir", src.dir, "--no-exec"]);
    const dstServer = await startServe(["--socket", dstSock, "--data-dir", target, "--no-exec"]);
    const clients = createClients(dstSock);
    try {
      const file = join(d, "live.lrebundle");
      const exported = await lre(["export", file, "--data-dir", src.dir]);
      expect(exported.exitCode).toBe(0);

      // Before: the server on the target knows nothing.
      const fx = src.fx;
      const a = { instanceName: "", actionDigest: toWire(fx.actionA) };
      await expect(clients.getActionResult(a)).rejects.toThrow("NOT_FOUND");

      const imported = await lre(["import", file, "--data-dir", target]);
      expect(imported.stderr).toBe("");
      expect(imported.stdout).toStartWith(`added ${fx.blobs.size} blobs`);

      expect(await clients.getActionResult(a)).toEqual(fx.resultA);
      const b = { instanceName: "team/b", actionDigest: toWire(fx.actionB), digestFunction: fnToWire("blake3") };
      expect(await clients.getActionResult(b)).toEqual(fx.resultB);
      const big = fx.blobs.get("big")!;
      const read = await clients.read({ resourceName: `blobs/${big.digest.hash}/${big.digest.sizeBytes}` });
      expect(read.data.equals(big.data)).toBe(true);
      const small = await clients.batchReadBlobs({ digests: [toWire(fx.blobs.get("stdout")!.digest)] });
      expect(Buffer.from(small.responses[0]?.data ?? []).toString()).toBe("A said hello\n");
      // Imported without --trust-origin: the result lre ran on the source counts as a client upload here.
      expect(await statsOf(target)).toEqual({ ...(await statsOf(src.dir)), acFromSandbox: 0, acFromClients: 2 });
    } finally {
      clients.close();
      expect(await stop(srcServer)).toBe(0);
      expect(await stop(dstServer)).toBe(0);
    }
  });
});

function flipAt(b: Buffer, at: number): Buffer {
  expect(at).toBeGreaterThanOrEqual(0);
  const copy = Buffer.from(b);
  copy[at] = (copy[at] as number) ^ 0x10;
  return copy;
}
