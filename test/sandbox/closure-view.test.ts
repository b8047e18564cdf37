import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, utimesSync } from "node:fs";
import { basename, join } from "node:path";
import { ClosureResolver, actionSandboxSpec, collectClosureViews, ensureClosureView, runSandboxed } from "../../sandbox/mod";
import { tempDir } from "./helpers";
import type { Closure } from "../../sandbox/mod";
import { ensureNixToolchain } from "../support/nix-fixture";
import type { NixToolchain } from "../support/nix-fixture";

let nix: NixToolchain;
let closureB: Closure;
const resolver = new ClosureResolver();
// Private views dirs per test file run, on the /nix/store filesystem.
const viewsDir = `/nix/var/lre/test-views-${process.pid}`;
const copyViewsDir = `/dev/shm/lre-test-views-${process.pid}`;

beforeAll(async () => {
  nix = await ensureNixToolchain();
  closureB = resolver.resolve([nix.toolchainB]);
});
afterAll(() => {
  resolver.close();
  rmSync(viewsDir, { recursive: true, force: true });
  rmSync(copyViewsDir, { recursive: true, force: true });
});

describe("ensureClosureView", () => {
  test("shows exactly the closure's store paths, sharing the store's inodes", async () => {
    const view = await ensureClosureView(closureB, { viewsDir });
    expect(view).toBe(join(viewsDir, closureB.hash));
    expect(readdirSync(view).sort()).toEqual(closureB.paths.map((p) => basename(p)).sort());
    expect(existsSync(join(view, basename(nix.outsider)))).toBe(false);
    // Files are hardlinks of the store's files, not copies.
    const bb = join(view, basename(nix.busybox), "bin", "busybox");
    expect(statSync(bb).ino).toBe(statSync(join(nix.busybox, "bin", "busybox")).ino);
    expect(readFileSync(join(view, basename(nix.toolchainB), "share", "greeting"), "utf8")).toBe("hello from toolchain-b\n");
  });

  test("symlinks stay symlinks with their original targets", async () => {
    const view = await ensureClosureView(closureB, { viewsDir });
    const sh = join(view, basename(nix.toolchainA), "bin", "sh");
    expect(lstatSync(sh).isSymbolicLink()).toBe(true);
    expect(readlinkSync(sh)).toBe(`${nix.busybox}/bin/busybox`);
    expect(readlinkSync(join(view, basename(nix.busybox), "bin", "sh"))).toBe("busybox");
  });

  test("concurrent requests for one closure, in one process or several, yield one complete view", async () => {
    const closure = resolver.resolve([nix.toolchainA]);
    const script = `import { ensureClosureView } from ${JSON.stringify(join(import.meta.dir, "../../sandbox/mod"))};
      console.log(await ensureClosureView(${JSON.stringify(closure)}, { viewsDir: ${JSON.stringify(viewsDir)} }));`;
    const others = [1, 2, 3].map(() => Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" }));
    const mine = await Promise.all([1, 2, 3].map(() => ensureClosureView(closure, { viewsDir })));
    const theirs = await Promise.all(others.map(async (p) => {
      expect(await p.exited).toBe(0);
      return (await new Response(p.stdout).text()).trim();
    }));
    for (const dir of [...mine, ...theirs]) expect(dir).toBe(join(viewsDir, closure.hash));
    expect(readdirSync(join(viewsDir, closure.hash)).sort()).toEqual(closure.paths.map((p) => basename(p)).sort());
    // No temp directories are left behind by the losers.
    expect(readdirSync(viewsDir).filter((n) => n.startsWith("."))).toEqual([]);
  });

  test("on another filesystem (no hardlinks possible) files are copied instead", async () => {
    const view = await ensureClosureView(closureB, { viewsDir: copyViewsDir });
    const bb = join(view, basename(nix.busybox), "bin", "busybox");
    const original = join(nix.busybox, "bin", "busybox");
    expect(statSync(bb).ino).not.toBe(statSync(original).ino);
    expect(statSync(bb).size).toBe(statSync(original).size);
    expect(statSync(bb).mode & 0o777).toBe(statSync(original).mode & 0o777);
    expect(Bun.hash(readFileSync(bb))).toBe(Bun.hash(readFileSync(original)));
  });
});

describe("collectClosureViews", () => {
  test("keeps the most recently used views and those in use, removes the rest", async () => {
    const dir = `${viewsDir}-gc`;
    try {
      const closures = [nix.busybox, nix.toolchainA, nix.toolchainB, nix.outsider].map((p) => resolver.resolve([p]));
      for (const [i, c] of closures.entries()) {
        const view = await ensureClosureView(c, { viewsDir: dir });
        const t = new Date(Date.now() - (10 - i) * 60_000); // later index = more recently used
        utimesSync(view, t, t);
      }
      const [oldest, older, newer, newest] = closures.map((c) => c.hash) as [string, string, string, string];
      const removed = await collectClosureViews({ viewsDir: dir, keep: 1, inUse: new Set([older]), minIdleMs: 0 });
      expect(removed.sort()).toEqual([oldest, newer].sort());
      expect(readdirSync(dir).sort()).toEqual([older, newest].sort());
      // A collected view is rebuilt on the next request.
      const again = await ensureClosureView(closures[0] as Closure, { viewsDir: dir });
      expect(readdirSync(again)).toEqual([basename(nix.busybox)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a view bound by a running sandbox is never collected", async () => {
    const dir = `${viewsDir}-gc3`;
    const work = tempDir("gc-in-use");
    try {
      const closure = resolver.resolve([nix.toolchainA]);
      const view = await ensureClosureView(closure, { viewsDir: dir });
      const spec = actionSandboxSpec({ closureView: view, inputRoot: work, argv: [nix.shell, "-c", "touch running; sleep 600"], env: {} });
      const controller = new AbortController();
      const running = runSandboxed(spec, { stdoutPath: join(work, "o"), stderrPath: join(work, "e"), timeoutMs: 60_000, signal: controller.signal });
      while (!existsSync(join(work, "running"))) await Bun.sleep(10);
      expect(await collectClosureViews({ viewsDir: dir, keep: 0, minIdleMs: 0 })).toEqual([]);
      controller.abort();
      await running;
      expect(await collectClosureViews({ viewsDir: dir, keep: 0, minIdleMs: 0 })).toEqual([closure.hash]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("recently used views survive even beyond the count", async () => {
    const dir = `${viewsDir}-gc2`;
    try {
      await ensureClosureView(resolver.resolve([nix.busybox]), { viewsDir: dir });
      await ensureClosureView(resolver.resolve([nix.outsider]), { viewsDir: dir });
      expect(await collectClosureViews({ viewsDir: dir, keep: 0 })).toEqual([]);
      expect(readdirSync(dir)).toHaveLength(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
