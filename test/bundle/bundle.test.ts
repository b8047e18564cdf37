import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LmdbActionCache } from "../../src/ac/lmdb-action-cache";
import { DamagedBundleError, walkBundle } from "../../src/bundle/bundle-reader";
import { exportBundle, type ExportSummary } from "../../src/bundle/export-bundle";
import { FOOTER_BYTES } from "../../src/bundle/format";
import { importBundle, type ImportOptions, type ImportSummary } from "../../src/bundle/import-bundle";
import type { Selection } from "../../src/bundle/select";
import { ManualClock, type Clock } from "../../src/clock";
import { type Digest, digestKey, formatDigest, toWire } from "../../src/digest/digest";
import { ActionResult } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { isRpcError, GrpcCode } from "../../src/errors";
import { blobKeys, editBundle, fillStore, openStore, put, readAll, type Fixture } from "./fixture";

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "lre-bundle-"));
  roots.push(d);
  return d;
}
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

async function exportFrom(dataDir: string, path: string, selection: Selection, clock?: Clock): Promise<ExportSummary> {
  const s = await openStore(dataDir, clock);
  const ac = await LmdbActionCache.open({ dataDir });
  try {
    return await exportBundle(path, { cas: s.cas, actionResults: () => ac.entries() }, { selection, nowMs: Date.now(), writer: "lre test" });
  } finally {
    await ac.close();
    await s.close();
  }
}

async function importInto(dataDir: string, path: string, options?: ImportOptions): Promise<ImportSummary> {
  const s = await openStore(dataDir);
  const ac = await LmdbActionCache.open({ dataDir });
  try {
    return await importBundle(path, { cas: s.cas, ac }, options);
  } finally {
    await ac.close();
    await s.close();
  }
}

/** What a bundle holds, read with the verifying reader. */
async function contents(path: string): Promise<{ blobs: string[]; results: string[] }> {
  const blobs: string[] = [];
  const results: string[] = [];
  await walkBundle(path, {
    blob: async (f) => void blobs.push(digestKey(f.digest)),
    actionResult: (f) => void results.push(`${f.instance}|${digestKey(f.action)}|${f.origin}`),
  });
  return { blobs: blobs.sort(), results: results.sort() };
}

const keysOf = (fx: Fixture, names: readonly string[]) => names.map((n) => digestKey(fx.blobs.get(n)!.digest)).sort();

/** One source store, filled once, shared by the tests that only read it. */
async function source(): Promise<{ dir: string; fx: Fixture }> {
  const dir = join(tempDir(), "src");
  const s = await openStore(dir);
  try {
    return { dir, fx: await fillStore(s) };
  } finally {
    await s.close();
  }
}

describe("a bundle of everything", () => {
  test("imported with trustOrigin into an empty store gives the same store: blobs, bytes, action results and their origins", async () => {
    const { dir, fx } = await source();
    const file = join(tempDir(), "all.lrebundle");
    const exported = await exportFrom(dir, file, { kind: "all" });
    expect(exported).toMatchObject({ blobs: fx.blobs.size, actionResults: 2, incomplete: 0 });

    const target = join(tempDir(), "dst");
    const imported = await importInto(target, file, { trustOrigin: true });
    expect(imported).toMatchObject({ addedBlobs: fx.blobs.size, addedActionResults: 2, presentBlobs: 0, presentActionResults: 0 });
    expect(imported.header).toMatchObject({ kind: "bundle", version: 1, selection: "everything", writer: "lre test" });

    const [a, b] = [await openStore(dir), await openStore(target)];
    try {
      const [sa, sb] = [await a.stats(), await b.stats()];
      expect({ ...sb, maxBytes: 0 }).toEqual({ ...sa, maxBytes: 0, acHits: 0, acMisses: 0 });
      expect(sb).toMatchObject({ blobs: fx.blobs.size, acEntries: 2, acFromSandbox: 1, acFromClients: 1 });
      expect(await blobKeys(b)).toEqual(await blobKeys(a));
      for (const [name, { digest, data }] of fx.blobs) {
        expect({ name, same: Buffer.from(await readAll(b, digest)).equals(data) }).toEqual({ name, same: true });
      }
      // Through the completeness-checking cache: a hit, so every blob it needs arrived.
      expect(await b.ac.get("", fx.actionA)).toEqual({ result: fx.resultA, origin: "sandbox" });
      expect(await b.ac.get("team/b", fx.actionB)).toEqual({ result: fx.resultB, origin: "client" });
      expect(await b.ac.get("", fx.actionB)).toBeUndefined();
    } finally {
      await a.close();
      await b.close();
    }

    const again = await importInto(target, file, { trustOrigin: true });
    expect(again).toMatchObject({ addedBlobs: 0, addedBytes: 0, addedActionResults: 0, presentBlobs: fx.blobs.size, presentActionResults: 2 });
    // Without trustOrigin the same results are present too: one run by lre here is not downgraded by an untrusted copy.
    expect(await importInto(target, file)).toMatchObject({ addedActionResults: 0, presentActionResults: 2 });
    const t = await openStore(target);
    try {
      expect(await t.ac.get("", fx.actionA)).toEqual({ result: fx.resultA, origin: "sandbox" });
    } finally {
      await t.close();
    }
  });

  test("imported without trustOrigin, every action result is recorded as a client upload, whatever the bundle claims", async () => {
    const { dir, fx } = await source();
    const file = join(tempDir(), "all.lrebundle");
    await exportFrom(dir, file, { kind: "all" });
    expect((await contents(file)).results).toContain(`|${digestKey(fx.actionA)}|sandbox`);

    const target = join(tempDir(), "dst");
    expect(await importInto(target, file)).toMatchObject({ addedActionResults: 2 });
    const t = await openStore(target);
    try {
      expect(await t.ac.get("", fx.actionA)).toEqual({ result: fx.resultA, origin: "client" });
      expect(await t.ac.get("team/b", fx.actionB)).toEqual({ result: fx.resultB, origin: "client" });
      expect(await t.stats()).toMatchObject({ acEntries: 2, acFromSandbox: 0, acFromClients: 2 });
    } finally {
      await t.close();
    }
    // Trusting the same bundle later upgrades the entry it says lre ran.
    expect(await importInto(target, file, { trustOrigin: true })).toMatchObject({ addedActionResults: 1, presentActionResults: 1 });
  });

  test("leaves out an action result whose blobs are gone, and says so", async () => {
    const { dir, fx } = await source();
    const s = await openStore(dir);
    await s.cas.delete([fx.blobs.get("outB")!.digest]);
    await s.close();
    const file = join(tempDir(), "partial.lrebundle");
    expect(await exportFrom(dir, file, { kind: "all" })).toMatchObject({ blobs: fx.blobs.size - 1, actionResults: 1, incomplete: 1 });
    expect((await contents(file)).results).toEqual([`|${digestKey(fx.actionA)}|sandbox`]);
  });

  test("a failed export leaves no file behind", async () => {
    const { dir } = await source();
    const file = join(tempDir(), "no-such-dir", "x.lrebundle");
    await expect(exportFrom(dir, file, { kind: "all" })).rejects.toThrow("cannot create");
  });
});

describe("export --since", () => {
  test("takes blobs used within the window and the action results used or added in it", async () => {
    const clock = new ManualClock();
    const dir = join(tempDir(), "src");
    const s = await openStore(dir, clock);
    const fx = await fillStore(s);
    clock.advance(5 * 3_600_000);
    // A new result and a cache hit on B, five hours after everything else.
    const blobs = new Map(fx.blobs);
    const outC = await put(s, blobs, "outC", "output of C\n");
    const actionC = await put(s, blobs, "actionC", "action C\n");
    await s.ac.put("", actionC, { result: ActionResult.fromPartial({ outputFiles: [{ path: "c", digest: toWire(outC) }] }), origin: "client" });
    expect(await s.ac.get("team/b", fx.actionB)).toBeDefined();
    await s.close();

    const file = join(tempDir(), "since.lrebundle");
    const exported = await exportFrom(dir, file, { kind: "since", cutoffMs: clock.nowMs() - 3_600_000, label: "1h" }, clock);
    expect(exported).toMatchObject({ blobs: 3, actionResults: 2 });
    const got = await contents(file);
    expect(got.blobs).toEqual([digestKey(outC), digestKey(actionC), digestKey(fx.blobs.get("outB")!.digest)].sort());
    expect(got.results).toEqual([`team/b|${digestKey(fx.actionB)}|client`, `|${digestKey(actionC)}|client`].sort());
  });
});

describe("export --action", () => {
  test("takes one result with the blobs it needs, its Action, Command and input tree, and nothing else", async () => {
    const { dir, fx } = await source();
    const file = join(tempDir(), "one.lrebundle");
    const sel: Selection = { kind: "action", hash: fx.actionA.hash, sizeBytes: fx.actionA.sizeBytes };
    expect(await exportFrom(dir, file, sel)).toMatchObject({ actionResults: 1 });
    const got = await contents(file);
    expect(got.results).toEqual([`|${digestKey(fx.actionA)}|sandbox`]);
    expect(got.blobs).toEqual(keysOf(fx, [...fx.neededByA, ...fx.inspectA]));

    const target = join(tempDir(), "dst");
    await importInto(target, file, { trustOrigin: true });
    const t = await openStore(target);
    try {
      expect(await t.ac.get("", fx.actionA)).toEqual({ result: fx.resultA, origin: "sandbox" });
      expect((await t.stats()).acEntries).toBe(1);
    } finally {
      await t.close();
    }
  });

  test("of an action whose Action blob is not stored takes only what the result needs", async () => {
    const { dir, fx } = await source();
    const file = join(tempDir(), "b.lrebundle");
    await exportFrom(dir, file, { kind: "action", hash: fx.actionB.hash, sizeBytes: fx.actionB.sizeBytes, fn: "blake3" });
    expect(await contents(file)).toEqual({ blobs: keysOf(fx, ["outB"]), results: [`team/b|${digestKey(fx.actionB)}|client`] });
  });

  test("of an unknown action is NOT_FOUND and writes nothing", async () => {
    const { dir, fx } = await source();
    const file = join(tempDir(), "none.lrebundle");
    const err = await exportFrom(dir, file, { kind: "action", hash: fx.actionA.hash, sizeBytes: fx.actionA.sizeBytes + 1 }).catch((e: unknown) => e);
    expect(isRpcError(err, GrpcCode.NOT_FOUND)).toBe(true);
    expect(() => readFileSync(file)).toThrow();
  });

  test("of a result with a missing output is refused", async () => {
    const { dir, fx } = await source();
    const s = await openStore(dir);
    await s.cas.delete([fx.blobs.get("big")!.digest]);
    await s.close();
    const file = join(tempDir(), "broken.lrebundle");
    await expect(exportFrom(dir, file, { kind: "action", hash: fx.actionA.hash, sizeBytes: fx.actionA.sizeBytes })).rejects.toThrow(
      "cannot be exported complete",
    );
  });
});

describe("a damaged bundle is rejected whole, and the store is left exactly as it was", () => {
  let prepared: Promise<{ file: string; fx: Fixture; bytes: Buffer }> | undefined;
  const bundle = () =>
    (prepared ??= (async () => {
      const { dir, fx } = await source();
      const file = join(tempDir(), "good.lrebundle");
      await exportFrom(dir, file, { kind: "all" });
      return { file, fx, bytes: readFileSync(file) };
    })());

  /** A target store already holding one of the bundle's blobs and nothing else. */
  async function target(fx: Fixture): Promise<{ dir: string; before: () => Promise<unknown> }> {
    const dir = join(tempDir(), "dst");
    const s = await openStore(dir);
    await s.cas.put(fx.blobs.get("out")!.digest, fx.blobs.get("out")!.data);
    await s.close();
    const snapshot = async () => {
      const t = await openStore(dir);
      try {
        const ac = await LmdbActionCache.open({ dataDir: dir });
        const entries: string[] = [];
        for await (const e of ac.entries()) entries.push(`${e.instance}|${digestKey(e.action)}`);
        await ac.close();
        return { stats: await t.stats(), blobs: await blobKeys(t), entries };
      } finally {
        await t.close();
      }
    };
    return { dir, before: snapshot };
  }

  async function expectRejected(damage: (b: Buffer, fx: Fixture) => Buffer, message: RegExp | string): Promise<void> {
    const { fx, bytes } = await bundle();
    const file = join(tempDir(), "damaged.lrebundle");
    writeFileSync(file, damage(Buffer.from(bytes), fx));
    const t = await target(fx);
    const before = await t.before();
    const err = await importInto(t.dir, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DamagedBundleError);
    expect((err as Error).message).toContain(`bundle "${file}" is damaged:`);
    if (typeof message === "string") expect((err as Error).message).toContain(message);
    else expect((err as Error).message).toMatch(message);
    expect(await t.before()).toEqual(before);
    expect((before as { stats: { blobs: number } }).stats.blobs).toBe(1);
  }

  const flip = (at: (b: Buffer, fx: Fixture) => number) => (b: Buffer, fx: Fixture) => {
    const i = at(b, fx);
    expect(i).toBeGreaterThanOrEqual(0);
    b[i] = (b[i] as number) ^ 0x20;
    return b;
  };
  const find = (b: Buffer, text: string | Uint8Array) => b.indexOf(typeof text === "string" ? Buffer.from(text) : Buffer.from(text));

  test("one flipped byte in a small blob's body", () =>
    expectRejected(flip((b, fx) => find(b, fx.blobs.get("stdout")!.data) + 3), /blob [0-9a-f]{64}\/13 at byte \d+ does not match its digest/));

  test("one flipped byte in the last megabyte of the 3 MiB blob", () =>
    expectRejected(flip((b, fx) => find(b, fx.blobs.get("big")!.data.subarray(0, 64)) + 3 * 1024 * 1024 + 5), "does not match its digest"));

  test("one flipped byte in the body of the last blob", () =>
    expectRejected(flip((b, fx) => find(b, fx.blobs.get("loose")!.data) + 1), "does not match its digest"));

  test("one flipped byte in a header (the instance name of the last action result)", () =>
    expectRejected(flip((b) => find(b, "team/b") + 2), "checksum does not match"));

  test("one flipped byte in a blob's header (its size)", () =>
    expectRejected(flip((b, fx) => find(b, fx.blobs.get("stdout")!.data) - 1), /damaged/));

  test("one flipped byte in the end frame's totals", () =>
    expectRejected(flip((b) => find(b, "actionResults") + "actionResults".length), /totals say|checksum/));

  test("one flipped byte in the checksum", () => expectRejected(flip((b) => b.length - FOOTER_BYTES + 7), "checksum does not match"));

  test("one flipped byte in the end marker", () => expectRejected(flip((b) => b.length - 2), "truncated"));

  test("truncated by one byte", () => expectRejected((b) => b.subarray(0, b.length - 1), "truncated"));

  test("truncated in the middle of the big blob", () => expectRejected((b) => b.subarray(0, Math.floor(b.length / 2)), "truncated"));

  test("empty, or not a bundle at all", async () => {
    await expectRejected(() => Buffer.alloc(0), "too short");
    await expectRejected(() => Buffer.from("x".repeat(100)), "not an lre bundle");
  });

  test("a bundle from a newer lre is refused by version", async () => {
    // Rewrite the version and fix the checksum, so only the version is wrong.
    const { bytes } = await bundle();
    const at = bytes.indexOf(Buffer.from("version")) + "version".length;
    expect(bytes[at]).toBe(1);
    const b = Buffer.from(bytes);
    b[at] = 2;
    const body = b.subarray(0, b.length - FOOTER_BYTES);
    Buffer.from(new Bun.CryptoHasher("sha256").update(body).digest()).copy(b, b.length - FOOTER_BYTES);
    await expectRejected(() => b, "format version 2");
  });

  test("a file truncated on disk after export (truncate(2)) is caught the same way", async () => {
    const { file, fx } = await bundle();
    const copy = join(tempDir(), "cut.lrebundle");
    copyFileSync(file, copy);
    truncateSync(copy, 1000);
    const t = await target(fx);
    const before = await t.before();
    await expect(importInto(t.dir, copy)).rejects.toThrow("truncated");
    expect(await t.before()).toEqual(before);
  });
});

describe("a bundle is checked like a client's upload: one action result lre would refuse rejects the whole import", () => {
  /**
   * A real export of two action results; the second (instance "team/aa") is
   * the one a test edits in place. Edits keep every length, so the framing
   * stays valid, and the footer checksum is recomputed, as anyone editing a
   * bundle can: only the checks on what the entry says can catch them.
   */
  let prepared: Promise<{ bytes: Buffer; out: Digest; bad: Digest }> | undefined;
  const bundle = () =>
    (prepared ??= (async () => {
      const dir = join(tempDir(), "src");
      const s = await openStore(dir);
      const blobs: Fixture["blobs"] = new Map();
      const out = await put(s, blobs, "out", "an output\n");
      const good = await put(s, blobs, "good", "an action left alone\n");
      const bad = await put(s, blobs, "bad", "an action whose result is edited\n");
      await s.ac.put("", good, { result: ActionResult.fromPartial({ outputFiles: [{ path: "good/out", digest: toWire(out) }] }), origin: "client" });
      const edited = ActionResult.fromPartial({
        outputFiles: [{ path: "ab/out", digest: toWire(out) }],
        outputSymlinks: [{ path: "sym/ln", target: "ab/out" }],
      });
      await s.ac.put("team/aa", bad, { result: edited, origin: "sandbox" });
      await s.close();
      const file = join(tempDir(), "to-edit.lrebundle");
      expect(await exportFrom(dir, file, { kind: "all" })).toMatchObject({ blobs: 3, actionResults: 2 });
      return { bytes: readFileSync(file), out, bad };
    })());

  async function expectRefused(edited: Buffer, instance: string, why: string): Promise<void> {
    const { bad } = await bundle();
    const file = join(tempDir(), "edited.lrebundle");
    writeFileSync(file, edited);
    const target = join(tempDir(), "dst");
    const err = await importInto(target, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DamagedBundleError);
    const message = (err as Error).message;
    expect(message).toContain(`bundle "${file}" holds an action result lre does not accept (the one at byte `);
    expect(message).toContain(`for action ${formatDigest(bad)} in instance "${instance}"): `);
    expect(message).toContain(why);
    // Nothing at all: not the blobs before it, not the valid result before it.
    const t = await openStore(target);
    try {
      expect(await t.stats()).toMatchObject({ blobs: 0, acEntries: 0 });
    } finally {
      await t.close();
    }
  }

  test("an edit that leaves the result valid imports, so each refusal below is the checks' doing", async () => {
    const { bytes } = await bundle();
    const file = join(tempDir(), "harmless.lrebundle");
    writeFileSync(file, editBundle(bytes, "ab/out", "cd/out", "first"));
    expect(await importInto(join(tempDir(), "dst"), file)).toMatchObject({ addedBlobs: 3, addedActionResults: 2 });
  });

  test.each([
    ["an output file climbing out of the working directory", "ab/out", "../out", 'output_files[0] has path "../out", which has a ".." segment'],
    ["an absolute output file", "ab/out", "/b/out", 'output_files[0] has path "/b/out", which is absolute'],
    ["an absolute output symlink", "sym/ln", "/ym/ln", 'output_symlinks[0] has path "/ym/ln", which is absolute'],
  ])("%s", async (_what, from, to, why) => {
    const { bytes } = await bundle();
    // "ab/out" is also the symlink's target, which comes after the output file's path.
    await expectRefused(editBundle(bytes, from, to, "first"), "team/aa", why);
  });

  test("a malformed digest in a result", async () => {
    const { bytes, out } = await bundle();
    // The last copy of the hash is the one in the edited result (blob frames and the first result come before it).
    await expectRefused(editBundle(bytes, out.hash, `Z${out.hash.slice(1)}`, "last"), "team/aa", `output_files[0] ("ab/out") digest has hash "Z`);
  });

  test.each([
    ["a \"..\" segment", "team/..", 'instance name "team/.." is not valid: it has a ".." segment'],
    ["a reserved segment", "blobs/a", 'it has the reserved segment "blobs"'],
    ["a control character", "team/a\x01", "has characters other than printable ASCII"],
  ])("an instance name with %s", async (_what, to, why) => {
    const { bytes } = await bundle();
    await expectRefused(editBundle(bytes, "team/aa", to), to.replace("\x01", "\\u0001"), why);
  });
});

test("every single flipped byte of a small bundle is caught by verification", async () => {
  const dir = join(tempDir(), "small");
  const s = await openStore(dir);
  const blobs: Fixture["blobs"] = new Map();
  const out = await put(s, blobs, "out", "small output\n");
  const action = await put(s, blobs, "action", "small action\n");
  await s.ac.put("i", action, { result: ActionResult.fromPartial({ outputFiles: [{ path: "o", digest: toWire(out), isExecutable: true }] }), origin: "sandbox" });
  await s.close();
  const file = join(tempDir(), "small.lrebundle");
  await exportFrom(dir, file, { kind: "all" });
  const good = readFileSync(file);
  await walkBundle(file);
  const damaged = join(tempDir(), "flipped.lrebundle");
  const missed: number[] = [];
  for (let i = 0; i < good.length; i++) {
    const b = Buffer.from(good);
    b[i] = (b[i] as number) ^ 0x01;
    writeFileSync(damaged, b);
    const err = await walkBundle(damaged).then(() => undefined, (e: unknown) => e);
    if (!(err instanceof DamagedBundleError)) missed.push(i);
  }
  expect({ bytes: good.length, missed }).toEqual({ bytes: good.length, missed: [] });
});
