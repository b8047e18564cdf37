import { describe, expect, test } from "bun:test";
import { CompletenessCheckingActionCache } from "../../src/ac/completeness-checking-action-cache";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { EmptyBlobStore } from "../../src/cas/empty-blob-store";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { ManualClock } from "../../src/clock";
import type { Digest } from "../../src/digest/digest";
import { emptyDigest, toWire } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { ActionResult, Tree } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

const action = digestOf("sha256", new TextEncoder().encode("the action"));

async function setup() {
  const clock = new ManualClock();
  const cas = new EmptyBlobStore(new MemoryBlobStore({ clock }));
  const ac = new CompletenessCheckingActionCache(new MemoryActionCache(), cas);
  const put = async (text: string): Promise<Digest> => {
    const data = new TextEncoder().encode(text);
    const d = digestOf("sha256", data);
    await cas.put(d, data);
    return d;
  };
  const out = await put("output file");
  const stdout = await put("stdout text");
  const stderr = await put("stderr text");
  const inTree = await put("file inside the tree");
  const nested = await put("file in a nested directory of the tree");
  const treeBytes = Tree.encode(
    Tree.fromPartial({
      root: { files: [{ name: "a.txt", digest: toWire(inTree) }, { name: "empty", digest: toWire(emptyDigest("sha256")) }] },
      children: [{ files: [{ name: "b.txt", digest: toWire(nested) }] }],
    }),
  ).finish();
  const tree = digestOf("sha256", treeBytes);
  await cas.put(tree, treeBytes);
  const result = ActionResult.fromPartial({
    outputFiles: [{ path: "out/file", digest: toWire(out) }],
    outputDirectories: [{ path: "out/dir", treeDigest: toWire(tree) }],
    stdoutDigest: toWire(stdout),
    stderrDigest: toWire(stderr),
  });
  await ac.put("", action, { result, origin: "sandbox" });
  return { clock, cas, ac, result, blobs: { out, stdout, stderr, tree, inTree, nested } };
}

describe("CompletenessCheckingActionCache", () => {
  test("a result whose blobs are all present is a hit", async () => {
    const { ac } = await setup();
    expect((await ac.get("", action))?.origin).toBe("sandbox");
  });

  for (const which of ["out", "stdout", "stderr", "tree", "inTree", "nested"] as const) {
    test(`a result is a miss once its ${which} blob is gone`, async () => {
      const { ac, cas, blobs } = await setup();
      await cas.delete([blobs[which]]);
      expect(await ac.get("", action)).toBeUndefined();
    });
  }

  test("a hit touches every referenced blob, including files inside Trees", async () => {
    const { ac, cas, clock, blobs } = await setup();
    clock.advance(60_000);
    await ac.get("", action);
    const used = new Map<string, number>();
    for await (const b of cas.list()) used.set(b.digest.hash, b.lastUsedMs);
    for (const d of Object.values(blobs)) expect(used.get(d.hash)).toBe(clock.nowMs());
  });

  test("malformed digests and undecodable Trees are misses, not errors", async () => {
    const { ac, cas, result } = await setup();
    const badHash = ActionResult.fromPartial({ ...result, outputFiles: [{ path: "x", digest: { hash: "zz", sizeBytes: 1 } }] });
    await ac.put("bad-hash", action, { result: badHash, origin: "client" });
    expect(await ac.get("bad-hash", action)).toBeUndefined();

    const noDigest = ActionResult.fromPartial({ outputFiles: [{ path: "x" }] });
    await ac.put("no-digest", action, { result: noDigest, origin: "client" });
    expect(await ac.get("no-digest", action)).toBeUndefined();

    const junk = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]);
    const junkDigest = digestOf("sha256", junk);
    await cas.put(junkDigest, junk);
    const badTree = ActionResult.fromPartial({ outputDirectories: [{ path: "d", treeDigest: toWire(junkDigest) }] });
    await ac.put("bad-tree", action, { result: badTree, origin: "client" });
    expect(await ac.get("bad-tree", action)).toBeUndefined();
  });

  test("empty outputs need no stored blob", async () => {
    const { ac } = await setup();
    const r = ActionResult.fromPartial({ outputFiles: [{ path: "empty", digest: toWire(emptyDigest("sha256")) }] });
    await ac.put("e", action, { result: r, origin: "sandbox" });
    expect(await ac.get("e", action)).toBeDefined();
  });
});
