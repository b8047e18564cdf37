/**
 * Acceptance test of remote execution: Debian's Bazel 4.2.3 sends every
 * action to `lre serve` over its Unix socket (`--remote_executor=unix://…`),
 * and lre runs each one in bubblewrap seeing only a Nix closure built offline
 * by test/support/nix-fixture.ts (toolchainB -> toolchainA -> busybox).
 *
 * Bazel runs genrules and run_shell actions as `<shell> -c <command>`; with
 * `--shell_executable` pointing at the fixture's busybox ash, the shell's
 * store path is in every action's argv, so lre adds it to the closure by
 * itself. `--remote_default_exec_properties=nix-closure=<toolchainB>` is the
 * other way to declare a closure, tested on its own at the end.
 *
 * The fixture (workspaces/exec-chain) holds a chain of three genrules, a
 * genrule reading toolchainB's files, one listing /nix/store, a genrule whose
 * output is a symlink to a sibling output, a declare_directory rule, a
 * declare_symlink rule with a dangling target, and a failing genrule.
 *
 * One lre and one Bazel server serve every test; the tests run in order.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { lstatSync, readFileSync, readdirSync, readlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { BazelWorkspace, countOf } from "../support/bazel";
import { startLre, type LreServer } from "../support/lre-server";
import { ensureNixToolchain, type NixToolchain } from "../support/nix-fixture";

const FIXTURE = join(import.meta.dir, "workspaces", "exec-chain");
/** Everything `//...` builds, relative to bazel-bin. */
const OUTPUTS = ["source.txt", "upper.txt", "counted.txt", "greeting.txt", "store_view.txt", "file_link.txt", "tree", "dangling.link"];
/** Actions behind OUTPUTS: one each. */
const ACTIONS = OUTPUTS.length;
/** Generous per-test limit: a few Bazel builds on a loaded 2-core machine. Not a timing goal. */
const TEST_TIMEOUT_MS = 300_000;

let lre: LreServer | undefined;
let ws: BazelWorkspace | undefined;
let nix: NixToolchain;

function server(): LreServer {
  if (lre === undefined) throw new Error("lre did not start; see beforeAll");
  return lre;
}
function workspace(): BazelWorkspace {
  if (ws === undefined) throw new Error("the Bazel workspace was not created; see beforeAll");
  return ws;
}

/** Flags every build here uses: remote execution only, over the socket, with the closure's shell. */
function execFlags(): string[] {
  return [
    `--remote_executor=${server().unixUri}`,
    "--remote_instance_name=exec-e2e",
    "--spawn_strategy=remote",
    `--shell_executable=${nix.shell}`,
    "--experimental_allow_unresolved_symlinks",
    "--incompatible_remote_symlinks",
    "--jobs=4",
  ];
}

/** execFlags plus the closure declared for every action through the platform. */
function withClosureProperty(): string[] {
  return [...execFlags(), `--remote_default_exec_properties=nix-closure=${nix.toolchainB}`];
}

/** One output as a test compares it: file bytes and mode, or a symlink's target. */
type Entry = { kind: "file"; text: string; executable: boolean } | { kind: "symlink"; target: string };

/**
 * The outputs under bazel-bin, without following symlinks (the declared
 * symlink dangles, so BazelWorkspace.readOutputs, which stats, cannot read it).
 */
function snapshot(relatives: readonly string[]): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const visit = (rel: string): void => {
    const abs = workspace().binPath(rel);
    const st = lstatSync(abs);
    if (st.isSymbolicLink()) out.set(rel, { kind: "symlink", target: readlinkSync(abs) });
    else if (st.isDirectory()) for (const name of readdirSync(abs).sort()) visit(`${rel}/${name}`);
    else out.set(rel, { kind: "file", text: readFileSync(abs, "latin1"), executable: (st.mode & 0o100) !== 0 });
  };
  for (const rel of relatives) visit(rel);
  return out;
}

function fileText(outputs: Map<string, Entry>, rel: string): string | undefined {
  const e = outputs.get(rel);
  return e?.kind === "file" ? e.text : undefined;
}

/** `ls /nix/store` as busybox prints it for these store paths. */
function storeListing(paths: readonly string[]): string {
  return paths.map((p) => basename(p)).sort().map((n) => `${n}\n`).join("");
}

beforeAll(async () => {
  nix = await ensureNixToolchain();
  lre = await startLre();
  ws = await BazelWorkspace.create({ copyFrom: FIXTURE });
}, 600_000);

afterAll(async () => {
  // Both always run, so neither a Bazel server nor lre outlives the file.
  try {
    await ws?.dispose();
  } finally {
    await lre?.dispose();
  }
}, 120_000);

describe("Bazel 4.2.3 with --remote_executor=unix://<socket>", () => {
  let first: Map<string, Entry> | undefined;

  test("every action of the first build runs on lre, in the declared closure", async () => {
    const build = await workspace().build(["//..."], withClosureProperty());
    expect(countOf(build.summary, "remote")).toBe(ACTIONS);
    expect(build.summary.total - countOf(build.summary, "internal")).toBe(ACTIONS);
    expect(countOf(build.summary, "remote cache hit")).toBe(0);

    const out = snapshot(OUTPUTS);
    // The chain: each step read the one before it.
    expect(fileText(out, "source.txt")).toBe("chain link one\n");
    expect(fileText(out, "upper.txt")).toBe("CHAIN LINK ONE\n");
    expect(fileText(out, "counted.txt")).toBe("CHAIN LINK ONE\n15\n");
    // toolchainB's own files were there: declared through the platform property.
    expect(fileText(out, "greeting.txt")).toBe("hello from toolchain-b\n");
    // The sandbox's store is the closure of toolchainB plus the shell: nothing else.
    expect(fileText(out, "store_view.txt")).toBe(storeListing([nix.toolchainB, nix.toolchainA, nix.busybox]));
    // A file output the action made a symlink: Bazel recreates the link.
    expect(out.get("file_link.txt")).toEqual({ kind: "symlink", target: "counted.txt" });
    expect(readFileSync(workspace().binPath("file_link.txt"), "utf8")).toBe("CHAIN LINK ONE\n15\n");
    // The declare_symlink output, target kept as written although it dangles.
    expect(out.get("dangling.link")).toEqual({ kind: "symlink", target: "payload/does-not-need-to-exist" });
    // The directory output, nested, with the executable bit where the action set it.
    expect([...out.keys()].filter((k) => k.startsWith("tree/"))).toEqual([
      "tree/nested/copy.txt",
      "tree/nested/deeper/leaf.txt",
      "tree/tool.sh",
    ]);
    expect(fileText(out, "tree/nested/copy.txt")).toBe("CHAIN LINK ONE\n15\n");
    expect(fileText(out, "tree/nested/deeper/leaf.txt")).toBe("deep\n");
    expect(out.get("tree/tool.sh")).toEqual({ kind: "file", text: "#!/bin/sh\necho tool\n", executable: true });
    first = out;
  }, TEST_TIMEOUT_MS);

  test("a failing action fails the build and its stderr reaches the user", async () => {
    const result = await workspace().tryBuild(["//:broken"], withClosureProperty());
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain("lre-e2e: the broken action says why");
    expect(result.stderr).toContain("Executing genrule //:broken failed: (Exit 3)");
    expect(result.stderr).toContain("Target //:broken failed to build");
  }, TEST_TIMEOUT_MS);

  test("after bazel clean, a rebuild is all remote cache hits with byte-identical outputs", async () => {
    expect(first).toBeDefined();
    await workspace().clean();
    const build = await workspace().build(["//..."], withClosureProperty());
    expect(countOf(build.summary, "remote cache hit")).toBe(ACTIONS);
    expect(countOf(build.summary, "remote")).toBe(0);
    expect(build.summary.total - countOf(build.summary, "internal")).toBe(ACTIONS);
    expect(snapshot(OUTPUTS)).toEqual(first!);
  }, TEST_TIMEOUT_MS);

  test("asked again, the failing target fails again the same way (a failure is never served as a result)", async () => {
    const result = await workspace().tryBuild(["//:broken"], withClosureProperty());
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain("lre-e2e: the broken action says why");
  }, TEST_TIMEOUT_MS);
});

describe("without --remote_default_exec_properties: the closure is what argv names", () => {
  test("the shell's store path alone makes the closure (toolchainA and busybox)", async () => {
    await workspace().clean();
    const build = await workspace().build(["//:store_view", "//:counted"], execFlags());
    // New action keys (no platform property), so all four run again, remotely.
    expect(countOf(build.summary, "remote")).toBe(4);
    expect(countOf(build.summary, "remote cache hit")).toBe(0);
    const out = snapshot(["store_view.txt", "counted.txt"]);
    expect(fileText(out, "store_view.txt")).toBe(storeListing([nix.toolchainA, nix.busybox]));
    expect(fileText(out, "counted.txt")).toBe("CHAIN LINK ONE\n15\n");
  }, TEST_TIMEOUT_MS);

  test("toolchainB, declared nowhere, is not visible", async () => {
    const result = await workspace().tryBuild(["//:greeting"], execFlags());
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain("can't open '/nix/store/*-toolchain-b/share/greeting'");
    expect(result.stderr).toContain("Executing genrule //:greeting failed");
  }, TEST_TIMEOUT_MS);
});
