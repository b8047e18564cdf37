import { describe, expect, test } from "bun:test";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { missingSubject } from "../../src/digest/digest";
import { GrpcCode, RpcError } from "../../src/errors";
import { loadActionInputs, walkInputTree } from "../../src/exec/input-tree";
import { Action, Command } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { type DirSpec, command, digestOfText, putBytes, putDirectory } from "./helpers";

async function rejection(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RpcError) return err;
    throw err;
  }
  throw new Error("expected an RpcError, but the call succeeded");
}

async function walkSpec(spec: DirSpec) {
  const cas = new MemoryBlobStore();
  const root = await putDirectory(cas, spec);
  return walkInputTree(cas, root);
}

describe("input tree: a well-formed tree", () => {
  test("is flattened with parents first, every file, symlink and distinct digest", async () => {
    const cas = new MemoryBlobStore();
    const hello = await putBytes(cas, "hello");
    const tool = await putBytes(cas, "#!/bin/sh\n");
    const sub = await putDirectory(cas, { files: [{ name: "again", digest: hello }], symlinks: [{ name: "up", target: "../tool" }] });
    const root = await putDirectory(cas, {
      files: [
        { name: "hello", digest: hello },
        { name: "tool", digest: tool, executable: true },
      ],
      dirs: [{ name: "sub", digest: sub }],
      symlinks: [{ name: "link", target: "sub/again" }],
    });
    const { tree, missing } = await walkInputTree(cas, root);
    expect(missing).toEqual([]);
    expect(tree.directories).toEqual(["sub"]);
    expect(tree.files.map((f) => [f.path, f.executable])).toEqual([
      ["hello", false],
      ["tool", true],
      ["sub/again", false],
    ]);
    expect(tree.symlinks).toEqual([
      { path: "link", target: "sub/again" },
      { path: "sub/up", target: "../tool" },
    ]);
    expect(tree.fileDigests.map((d) => d.hash).sort()).toEqual([hello.hash, tool.hash].sort());
  });
});

describe("input tree: symlink targets", () => {
  // GetCapabilities advertises symlink_absolute_path_strategy ALLOWED, and an
  // absolute target resolves inside the sandbox (e.g. into the closure view).
  test("an absolute target is accepted as is", async () => {
    const { tree } = await walkSpec({ symlinks: [{ name: "cc", target: "/nix/store/00000000000000000000000000000000-gcc/bin/gcc" }] });
    expect(tree.symlinks).toEqual([{ path: "cc", target: "/nix/store/00000000000000000000000000000000-gcc/bin/gcc" }]);
  });
});

describe("input tree: hostile Directory messages are INVALID_ARGUMENT (S-6)", () => {
  const f = digestOfText("x");
  const badNames = ["", ".", "..", "a/b", "/", "a\0b"];
  for (const name of badNames) {
    test(`file named ${JSON.stringify(name)}`, async () => {
      const err = await rejection(walkSpec({ files: [{ name, digest: f }] }));
      expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    });
    test(`directory named ${JSON.stringify(name)}`, async () => {
      const cas = new MemoryBlobStore();
      const empty = await putDirectory(cas, {});
      const root = await putDirectory(cas, { dirs: [{ name, digest: empty }] });
      const err = await rejection(walkInputTree(cas, root));
      expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    });
    test(`symlink named ${JSON.stringify(name)}`, async () => {
      const err = await rejection(walkSpec({ symlinks: [{ name, target: "x" }] }));
      expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    });
  }

  test("the same file twice", async () => {
    const err = await rejection(walkSpec({ files: [{ name: "a", digest: f }, { name: "a", digest: f }] }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain("twice");
  });

  test("a file and a directory of the same name", async () => {
    const cas = new MemoryBlobStore();
    const x = await putBytes(cas, "x");
    const empty = await putDirectory(cas, {});
    const root = await putDirectory(cas, { files: [{ name: "a", digest: x }], dirs: [{ name: "a", digest: empty }] });
    const err = await rejection(walkInputTree(cas, root));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain('"a"');
  });

  test("a file and a symlink of the same name", async () => {
    const err = await rejection(walkSpec({ files: [{ name: "a", digest: f }], symlinks: [{ name: "a", target: "b" }] }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  test("entries out of order", async () => {
    const err = await rejection(walkSpec({ files: [{ name: "b", digest: f }, { name: "a", digest: f }] }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain("sorted");
  });

  test("names are ordered as UTF-8 bytes, not UTF-16 units", async () => {
    // U+FF5E sorts after U+1F600 in UTF-16 code units but before it in UTF-8.
    const cas = new MemoryBlobStore();
    const x = await putBytes(cas, "x");
    const ok = await putDirectory(cas, { files: [{ name: "\uff5e", digest: x }, { name: "\u{1f600}", digest: x }] });
    expect((await walkInputTree(cas, ok)).tree.files).toHaveLength(2);
  });

  test("a symlink escaping the root with ..", async () => {
    const err = await rejection(walkSpec({ symlinks: [{ name: "up", target: "../outside" }] }));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  test("a nested symlink escaping through several ..", async () => {
    const cas = new MemoryBlobStore();
    const inner = await putDirectory(cas, { symlinks: [{ name: "l", target: "ok/../../../x" }] });
    const root = await putDirectory(cas, { dirs: [{ name: "d", digest: inner }] });
    const err = await rejection(walkInputTree(cas, root));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  test("a nested symlink that goes up but stays inside is accepted", async () => {
    const cas = new MemoryBlobStore();
    const inner = await putDirectory(cas, { symlinks: [{ name: "l", target: "../x" }] });
    const root = await putDirectory(cas, { dirs: [{ name: "d", digest: inner }] });
    expect((await walkInputTree(cas, root)).tree.symlinks).toEqual([{ path: "d/l", target: "../x" }]);
  });

  test("bytes that are not a Directory", async () => {
    const cas = new MemoryBlobStore();
    const root = await putBytes(cas, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    const err = await rejection(walkInputTree(cas, root));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
  });

  test("nesting deeper than 256 directories", async () => {
    const cas = new MemoryBlobStore();
    let d = await putDirectory(cas, {});
    for (let i = 0; i < 300; i++) d = await putDirectory(cas, { dirs: [{ name: "d", digest: d }] });
    const err = await rejection(walkInputTree(cas, d));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain("deeper than 256");
  });

  test("a small DAG that expands to millions of paths", async () => {
    const cas = new MemoryBlobStore();
    const x = await putBytes(cas, "x");
    const names = Array.from({ length: 1500 }, (_, i) => `n${String(i).padStart(5, "0")}`);
    const leaf = await putDirectory(cas, { files: names.map((name) => ({ name, digest: x })) });
    const mid = await putDirectory(cas, { dirs: names.map((name) => ({ name, digest: leaf })) });
    const root = await putDirectory(cas, { dirs: names.map((name) => ({ name, digest: mid })) });
    const err = await rejection(walkInputTree(cas, root));
    expect(err.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(err.message).toContain("more than 1000000");
  });
});

describe("input tree: missing blobs", () => {
  test("every absent blob (Command, Directory, files) is listed in one FAILED_PRECONDITION", async () => {
    const cas = new MemoryBlobStore();
    const present = await putBytes(cas, "present");
    const goneA = digestOfText("gone a");
    const goneB = digestOfText("gone b");
    const goneDir = digestOfText("not a directory that exists");
    const root = await putDirectory(cas, {
      files: [
        { name: "a", digest: goneA },
        { name: "b", digest: goneB },
        { name: "p", digest: present },
      ],
      dirs: [{ name: "sub", digest: goneDir }],
    });
    const cmd = digestOfText("command bytes never uploaded");
    const act = await putBytes(
      cas,
      Action.encode(Action.fromPartial({ commandDigest: cmd, inputRootDigest: root })).finish(),
    );
    const err = await rejection(loadActionInputs(cas, act));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(err.missing.map((m) => m.subject).sort()).toEqual(
      [cmd, goneA, goneB, goneDir].map(missingSubject).sort(),
    );
  });

  test("an absent Action is reported as missing itself", async () => {
    const cas = new MemoryBlobStore();
    const act = digestOfText("no such action");
    const err = await rejection(loadActionInputs(cas, act));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(err.missing).toEqual([{ subject: missingSubject(act) }]);
  });

  test("BLAKE3 subjects name their function", async () => {
    const cas = new MemoryBlobStore();
    const gone = digestOfText("gone", "blake3");
    const root = await putDirectory(cas, { files: [{ name: "a", digest: gone }] }, "blake3");
    const cmd = await putBytes(cas, Command.encode(command({ argv: ["true"] })).finish(), "blake3");
    const act = await putBytes(cas, Action.encode(Action.fromPartial({ commandDigest: cmd, inputRootDigest: root })).finish(), "blake3");
    const err = await rejection(loadActionInputs(cas, act));
    expect(err.missing).toEqual([{ subject: `blobs/blake3/${gone.hash}/${gone.sizeBytes}` }]);
  });
});
