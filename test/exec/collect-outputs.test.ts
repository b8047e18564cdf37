import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import type { Digest } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { GrpcCode, RpcError } from "../../src/errors";
import {
  MAX_INLINE_RESPONSE_BYTES,
  OutputBudget,
  buildTree,
  collectOutputs,
  declaredOutputs,
  type DeclaredOutput,
} from "../../src/exec/collect-outputs";
import { Directory, Tree } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { command } from "./helpers";

let root: string;
let cas: MemoryBlobStore;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "lre-outputs-"));
  cas = new MemoryBlobStore();
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const collect = (outputs: DeclaredOutput[], options: { inline?: string[]; limit?: number; wd?: string; sandboxRoot?: string } = {}) =>
  collectOutputs(
    cas,
    {
      root,
      workingDirectory: options.wd ?? "",
      outputs,
      fn: "sha256",
      inlineOutputFiles: options.inline ?? [],
      ...(options.sandboxRoot === undefined ? {} : { sandboxRoot: options.sandboxRoot }),
    },
    new OutputBudget(options.limit ?? 1 << 30),
  );

/** A listening Unix socket at `path`, as an action's server might leave one; resolves to its closer. */
function listenOn(path: string): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(path, () => resolve(() => new Promise<void>((done) => server.close(() => done()))));
  });
}

async function mknod(path: string, type: "b" | "c", major: string, minor: string): Promise<() => Promise<void>> {
  const r = Bun.spawnSync(["mknod", path, type, major, minor], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`mknod ${path} failed (run the tests as root): ${r.stderr.toString()}`);
  return async () => {};
}

async function casHolds(d: { hash: string; sizeBytes: number } | undefined): Promise<boolean> {
  if (d === undefined) return false;
  return (await cas.findMissing([{ fn: "sha256", hash: d.hash, sizeBytes: d.sizeBytes }])).length === 0;
}

async function rejection(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RpcError) return err;
    throw err;
  }
  throw new Error("expected an RpcError");
}

describe("declared outputs", () => {
  test("output_paths and both legacy lists merge; a path in both legacy lists is 'any'", () => {
    const outs = declaredOutputs(
      command({ argv: ["x"], outputFiles: ["f", "both"], outputDirectories: ["d", "both"], outputPaths: ["p", "f"] }),
    );
    expect(outs).toEqual([
      { path: "both", kind: "any" },
      { path: "d", kind: "directory" },
      { path: "f", kind: "file" },
      { path: "p", kind: "any" },
    ]);
  });

  for (const bad of ["../x", "/abs", "a//b", "a/./b", "a/", ""]) {
    test(`output path ${JSON.stringify(bad)} is INVALID_ARGUMENT`, () => {
      let err: unknown;
      try {
        declaredOutputs(command({ argv: ["x"], outputPaths: [bad] }));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RpcError);
      expect((err as RpcError).code).toBe(GrpcCode.INVALID_ARGUMENT);
    });
  }
});

describe("collecting outputs", () => {
  test("files get digests, the executable bit and CAS entries; absent outputs are left out", async () => {
    writeFileSync(join(root, "plain"), "data");
    writeFileSync(join(root, "tool"), "#!/bin/sh\n");
    chmodSync(join(root, "tool"), 0o755);
    const out = await collect([
      { path: "absent", kind: "any" },
      { path: "plain", kind: "file" },
      { path: "tool", kind: "any" },
    ]);
    expect(out.outputFiles.map((f) => [f.path, f.isExecutable, f.digest?.sizeBytes])).toEqual([
      ["plain", false, 4],
      ["tool", true, 10],
    ]);
    for (const f of out.outputFiles) expect(await casHolds(f.digest)).toBe(true);
    expect(out.outputFiles[0]!.contents.byteLength).toBe(0);
  });

  test("paths are relative to the working directory", async () => {
    mkdirSync(join(root, "wd", "sub"), { recursive: true });
    writeFileSync(join(root, "wd", "sub", "o"), "x");
    const out = await collect([{ path: "sub/o", kind: "file" }], { wd: "wd" });
    expect(out.outputFiles.map((f) => f.path)).toEqual(["sub/o"]);
  });

  test("an untyped symlink is classified by resolving it inside the root with lstat only, never through the host (L4)", async () => {
    mkdirSync(join(root, "real", "sub"), { recursive: true });
    symlinkSync("real/sub", join(root, "rel"));
    symlinkSync("/build/root/real", join(root, "abs"));
    symlinkSync("rel/../..", join(root, "chain"));
    symlinkSync("../../..", join(root, "escape"));
    symlinkSync("/tmp", join(root, "hostdir"));
    const out = await collect(
      ["abs", "chain", "escape", "hostdir", "rel"].map((path) => ({ path, kind: "any" as const })),
      { sandboxRoot: "/build/root" },
    );
    expect(out.outputDirectorySymlinks.map((s) => s.path)).toEqual(["abs", "chain", "rel"]);
    expect(out.outputFileSymlinks.map((s) => s.path)).toEqual(["escape", "hostdir"]);
  });

  test("a path only in output_files that is a directory, or only in output_directories that is a file, is FAILED_PRECONDITION (L5)", async () => {
    mkdirSync(join(root, "madedir"));
    writeFileSync(join(root, "madefile"), "x");
    const asFile = await rejection(collect([{ path: "madedir", kind: "file" }]));
    expect(asFile.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(asFile.message).toContain("output_files");
    const asDir = await rejection(collect([{ path: "madefile", kind: "directory" }]));
    expect(asDir.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(asDir.message).toContain("output_directories");
    // In both lists (Buck2's compatibility mode) it is "any": whatever exists is returned.
    const any = await collect([{ path: "madedir", kind: "any" }, { path: "madefile", kind: "any" }]);
    expect(any.outputDirectories.map((d) => d.path)).toEqual(["madedir"]);
    expect(any.outputFiles.map((f) => f.path)).toEqual(["madefile"]);
  });

  test("inline contents share one budget per response (M6)", async () => {
    const big = "y".repeat(600 * 1024);
    for (const n of ["a", "b", "c"]) writeFileSync(join(root, n), big);
    const out = await collect(
      ["a", "b", "c"].map((path) => ({ path, kind: "file" as const })),
      { inline: ["a", "b", "c"] },
    );
    const inlined = out.outputFiles.filter((f) => f.contents.byteLength > 0);
    expect(inlined.map((f) => f.path)).toEqual(["a"]);
    expect(out.outputFiles.reduce((n, f) => n + f.contents.byteLength, 0)).toBeLessThanOrEqual(MAX_INLINE_RESPONSE_BYTES);
  });

  test("inline_output_files puts small contents inline", async () => {
    writeFileSync(join(root, "small"), "inline me");
    const out = await collect([{ path: "small", kind: "file" }], { inline: ["small"] });
    expect(out.outputFiles[0]!.contents.toString()).toBe("inline me");
  });

  test("a symlink to /etc/shadow is stored as a symlink and no host bytes reach the CAS (S-7)", async () => {
    symlinkSync("/etc/shadow", join(root, "leak"));
    symlinkSync("/etc", join(root, "etcdir"));
    const before = await countBlobs();
    const out = await collect([
      { path: "leak", kind: "file" },
      { path: "etcdir", kind: "any" },
    ]);
    expect(out.outputSymlinks.map((s) => [s.path, s.target])).toEqual([
      ["leak", "/etc/shadow"],
      ["etcdir", "/etc"],
    ]);
    // "/etc" is a directory on the host but not in the sandbox, and the host is never consulted.
    expect(out.outputFileSymlinks.map((s) => s.path)).toEqual(["leak", "etcdir"]);
    expect(out.outputDirectorySymlinks.map((s) => s.path)).toEqual([]);
    expect(out.outputFiles).toEqual([]);
    expect(out.outputDirectories).toEqual([]);
    expect(await countBlobs()).toBe(before);
  });

  test("inside an output directory, a symlink pointing outside stays a SymlinkNode and is not followed", async () => {
    mkdirSync(join(root, "out"));
    symlinkSync("/etc", join(root, "out", "hostetc"));
    symlinkSync("/etc/passwd", join(root, "out", "passwd"));
    const out = await collect([{ path: "out", kind: "directory" }]);
    const tree = await readTree(out.outputDirectories[0]!.treeDigest!);
    expect(tree.root!.symlinks.map((s) => [s.name, s.target])).toEqual([
      ["hostetc", "/etc"],
      ["passwd", "/etc/passwd"],
    ]);
    expect(tree.root!.files).toEqual([]);
    expect(tree.children).toEqual([]);
  });

  test("an output below a symlinked parent is treated as absent, not looked up through the link", async () => {
    symlinkSync("/etc", join(root, "via"));
    const out = await collect([{ path: "via/passwd", kind: "file" }]);
    expect(out.outputFiles).toEqual([]);
  });

  test("a FIFO output is rejected (S-7)", async () => {
    const r = Bun.spawnSync(["mkfifo", join(root, "pipe")]);
    expect(r.exitCode).toBe(0);
    const err = await rejection(collect([{ path: "pipe", kind: "file" }]));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(err.message).toContain("FIFO");
  });

  test("a FIFO inside an output directory is rejected", async () => {
    mkdirSync(join(root, "d"));
    Bun.spawnSync(["mkfifo", join(root, "d", "pipe")]);
    const err = await rejection(collect([{ path: "d", kind: "directory" }]));
    expect(err.message).toContain("FIFO");
  });

  // mknod needs CAP_MKNOD: the suite runs as root, as the Nix fixture does.
  for (const [what, make, kind] of [
    ["a Unix socket", (path: string) => listenOn(path), "a socket"],
    ["a character device", (path: string) => mknod(path, "c", "1", "3"), "a device node"],
    ["a block device", (path: string) => mknod(path, "b", "7", "0"), "a device node"],
  ] as const) {
    test(`${what} as an output, or inside an output directory, is rejected naming it`, async () => {
      mkdirSync(join(root, "d"));
      const closers = [await make(join(root, "node")), await make(join(root, "d", "node"))];
      try {
        for (const [outputs, label] of [
          [[{ path: "node", kind: "any" }], '"node"'],
          [[{ path: "node", kind: "file" }], '"node"'],
          [[{ path: "d", kind: "directory" }], '"d/node"'],
        ] as const) {
          const err = await rejection(collect([...outputs]));
          expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
          expect(err.message).toContain(label);
          expect(err.message).toContain(`is ${kind}; REAPI outputs can only be regular files, directories and symlinks`);
        }
      } finally {
        for (const close of closers) await close();
      }
    });
  }

  test("outputs over the size cap fail with RESOURCE_EXHAUSTED naming the limit", async () => {
    writeFileSync(join(root, "big"), Buffer.alloc(2000));
    const err = await rejection(collect([{ path: "big", kind: "file" }], { limit: 1000 }));
    expect(err.code).toBe(GrpcCode.RESOURCE_EXHAUSTED);
    expect(err.message).toContain("1000 bytes");
  });

  test("a large file is streamed into the CAS with the right digest", async () => {
    const data = Buffer.alloc(9 * 1024 * 1024 + 7, 0x61);
    writeFileSync(join(root, "large"), data);
    const out = await collect([{ path: "large", kind: "file" }]);
    const expected = digestOf("sha256", data);
    expect(out.outputFiles[0]!.digest).toEqual({ hash: expected.hash, sizeBytes: expected.sizeBytes });
    expect(await casHolds(out.outputFiles[0]!.digest)).toBe(true);
  });
});

describe("canonical Tree encoding", () => {
  test("children sorted and deduplicated; every DirectoryNode digest is the digest of a child's bytes", async () => {
    const d = join(root, "out");
    for (const sub of ["b", "a", "c/deep"]) mkdirSync(join(d, sub), { recursive: true });
    writeFileSync(join(d, "b", "same"), "same");
    writeFileSync(join(d, "a", "same"), "same"); // a and b are identical directories
    writeFileSync(join(d, "c", "deep", "f"), "f");
    writeFileSync(join(d, "z"), "z");
    writeFileSync(join(d, "Z"), "Z");
    symlinkSync("a/same", join(d, "link"));
    const built = await buildTree(cas, "sha256", d, "out", new OutputBudget(1 << 20));
    const tree = built.tree;
    expect(tree.root!.files.map((f) => f.name)).toEqual(["Z", "z"]);
    expect(tree.root!.directories.map((x) => x.name)).toEqual(["a", "b", "c"]);
    expect(tree.root!.directories[0]!.digest).toEqual(tree.root!.directories[1]!.digest);
    expect(tree.root!.symlinks.map((s) => [s.name, s.target])).toEqual([["link", "a/same"]]);

    const byHash = new Map<string, Directory>();
    for (const child of tree.children) byHash.set(digestOf("sha256", Directory.encode(child).finish()).hash, child);
    expect(byHash.size).toBe(tree.children.length); // no duplicates
    expect(tree.children.length).toBe(3); // a==b, c, c/deep
    const hashes = [...byHash.keys()];
    expect(hashes).toEqual([...hashes].sort());
    const walk = (dir: Directory): void => {
      for (const n of dir.directories) {
        const child = byHash.get(n.digest!.hash);
        expect(child).toBeDefined();
        walk(child!);
      }
    };
    walk(tree.root!);

    // Decoding and re-encoding yields the same bytes: nothing non-canonical was written.
    const bytes = Tree.encode(tree).finish();
    expect(Buffer.from(Tree.encode(Tree.decode(bytes)).finish())).toEqual(Buffer.from(bytes));
    expect(built.treeDigest).toEqual(digestOf("sha256", bytes));
    expect(built.rootDigest).toEqual(digestOf("sha256", Directory.encode(tree.root!).finish()));
    expect(await casHolds(built.treeDigest)).toBe(true);
    expect(await casHolds(built.rootDigest)).toBe(true);
  });

  test("golden bytes: one non-executable file", async () => {
    const d = join(root, "g");
    mkdirSync(d);
    writeFileSync(join(d, "a"), "x");
    const built = await buildTree(cas, "sha256", d, "g", new OutputBudget(1 << 20));
    const h = digestOf("sha256", new TextEncoder().encode("x")).hash;
    // Digest{hash (1, len 64), size_bytes (2) = 1}; FileNode{name (1) = "a", digest (2)}; Directory.files (1).
    const digestMsg = Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from(h), Buffer.from([0x10, 0x01])]);
    const fileNode = Buffer.concat([Buffer.from([0x0a, 0x01, 0x61, 0x12, digestMsg.length]), digestMsg]);
    const dirBytes = Buffer.concat([Buffer.from([0x0a, fileNode.length]), fileNode]);
    expect(Buffer.from(Directory.encode(built.tree.root!).finish())).toEqual(dirBytes);
    // Tree.root (1) holds it; no children.
    expect(Buffer.from(Tree.encode(built.tree).finish())).toEqual(Buffer.concat([Buffer.from([0x0a, dirBytes.length]), dirBytes]));
  });

  test("an empty output directory is a Tree with an empty root", async () => {
    mkdirSync(join(root, "empty"));
    const out = await collect([{ path: "empty", kind: "directory" }]);
    const tree = await readTree(out.outputDirectories[0]!.treeDigest!);
    expect(tree.root).toEqual(Directory.create());
  });
});

async function readTree(d: { hash: string; sizeBytes: number }): Promise<Tree> {
  const digest: Digest = { fn: "sha256", hash: d.hash, sizeBytes: d.sizeBytes };
  return Tree.decode(await cas.get(digest));
}

async function countBlobs(): Promise<number> {
  let n = 0;
  for await (const _ of cas.list()) n++;
  return n;
}
