/**
 * A small but complete store for bundle tests: blobs inline and in files
 * (one of 3 MiB, read in chunks), SHA-256 and BLAKE3, and two action results
 * from different origins and instances. Action A also has its Action,
 * Command and input tree in the CAS; action B has only its outputs.
 */
import { expect } from "bun:test";
import { randomBytes } from "node:crypto";
import { FOOTER_BYTES } from "../../src/bundle/format";
import type { Clock } from "../../src/clock";
import type { Digest, DigestFn } from "../../src/digest/digest";
import { emptyDigest, toWire } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import { Action, ActionResult, Command, Directory, Tree } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { openStorage, type Storage } from "../../src/storage/open-storage";

export const GiB = 1024 ** 3;

export function openStore(dataDir: string, clock?: Clock): Promise<Storage> {
  return openStorage({ dataDir, maxBytes: GiB, ...(clock === undefined ? {} : { clock }) });
}

export interface Fixture {
  /** Every blob stored, by name, with its bytes. */
  readonly blobs: Map<string, { digest: Digest; data: Uint8Array }>;
  readonly actionA: Digest;
  readonly actionB: Digest;
  readonly resultA: ActionResult;
  readonly resultB: ActionResult;
  /** Blobs a hit on A needs. */
  readonly neededByA: readonly string[];
  /** Action, Command and input tree of A. */
  readonly inspectA: readonly string[];
}

export async function put(s: Storage, blobs: Fixture["blobs"], name: string, data: Uint8Array | string, fn: DigestFn = "sha256"): Promise<Digest> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = digestOf(fn, bytes);
  await s.cas.put(digest, bytes);
  blobs.set(name, { digest, data: bytes });
  return digest;
}

export async function fillStore(s: Storage): Promise<Fixture> {
  const blobs: Fixture["blobs"] = new Map();
  const p = (name: string, data: Uint8Array | string, fn?: DigestFn) => put(s, blobs, name, data, fn);

  const out = await p("out", "output of A\n");
  const big = await p("big", randomBytes(3 * 1024 * 1024 + 17));
  const stdout = await p("stdout", "A said hello\n");
  const inTree = await p("inTree", "file in A's output directory\n");
  const treeBytes = Tree.encode(
    Tree.fromPartial({
      root: { files: [{ name: "f.txt", digest: toWire(inTree) }, { name: "empty", digest: toWire(emptyDigest("sha256")) }] },
    }),
  ).finish();
  const tree = await p("tree", treeBytes);
  const srcFile = await p("src", "input file of A\n");
  const subFile = await p("subsrc", "nested input of A\n");
  const subDir = await p("subdir", Directory.encode(Directory.fromPartial({ files: [{ name: "n.txt", digest: toWire(subFile) }] })).finish());
  const root = await p(
    "root",
    Directory.encode(Directory.fromPartial({ files: [{ name: "src.txt", digest: toWire(srcFile) }], directories: [{ name: "sub", digest: toWire(subDir) }] })).finish(),
  );
  const command = await p("command", Command.encode(Command.fromPartial({ arguments: ["/bin/sh", "-c", "make A"], outputPaths: ["out"] })).finish());
  const actionA = await p("action", Action.encode(Action.fromPartial({ commandDigest: toWire(command), inputRootDigest: toWire(root) })).finish());
  const resultA = ActionResult.fromPartial({
    outputFiles: [{ path: "out", digest: toWire(out) }, { path: "big.bin", digest: toWire(big) }],
    outputDirectories: [{ path: "dir", treeDigest: toWire(tree) }],
    stdoutDigest: toWire(stdout),
    stderrDigest: toWire(emptyDigest("sha256")),
    exitCode: 0,
  });
  await s.ac.put("", actionA, { result: resultA, origin: "sandbox" });

  const outB = await p("outB", "output of B, hashed with BLAKE3\n", "blake3");
  const actionB = digestOf("blake3", new TextEncoder().encode("action B (its Action blob is not stored)"));
  const resultB = ActionResult.fromPartial({ outputFiles: [{ path: "b", digest: toWire(outB) }], exitCode: 0 });
  await s.ac.put("team/b", actionB, { result: resultB, origin: "client" });

  await p("loose", "a blob no action result needs\n");
  return {
    blobs,
    actionA,
    actionB,
    resultA,
    resultB,
    neededByA: ["out", "big", "stdout", "tree", "inTree"],
    inspectA: ["action", "command", "root", "src", "subdir", "subsrc"],
  };
}

/** The whole content of a blob, read back in chunks. */
export async function readAll(s: Storage, d: Digest): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of await s.cas.read(d)) parts.push(c.slice());
  return new Uint8Array(Buffer.concat(parts));
}

/** Digest keys of every stored blob, sorted: "what is in the CAS", for before/after comparisons. */
export async function blobKeys(s: Storage): Promise<string[]> {
  const keys: string[] = [];
  for await (const b of s.cas.list()) keys.push(`${b.digest.fn}:${b.digest.hash}:${b.digest.sizeBytes}`);
  return keys.sort();
}

/**
 * A bundle with one occurrence of `from` (the only one, unless told which)
 * replaced by `to`, of the same length so the framing stays valid, and its
 * footer checksum recomputed: what anyone can do to a bundle, since the
 * checksum is no signature.
 */
export function editBundle(bytes: Uint8Array, from: string, to: string, which: "only" | "first" | "last" = "only"): Buffer {
  expect(to.length).toBe(from.length);
  const b = Buffer.from(bytes);
  const at = which === "last" ? b.lastIndexOf(from) : b.indexOf(from);
  expect(at).toBeGreaterThanOrEqual(0);
  if (which === "only") expect(b.lastIndexOf(from)).toBe(at);
  b.write(to, at, "latin1");
  const body = b.subarray(0, b.length - FOOTER_BYTES);
  Buffer.from(new Bun.CryptoHasher("sha256").update(body).digest()).copy(b, b.length - FOOTER_BYTES);
  return b;
}
