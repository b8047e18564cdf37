/**
 * How sandboxes end: exit statuses, timeouts, escaping daemons, fork bombs,
 * runaway output, and lre itself dying. Every test ends by checking that no
 * process of the action is left on the host.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { SandboxStartError, findPidsCgroupDir, removeIdleCgroups, runSandboxed } from "../../sandbox/mod";
import type { RunOptions, RunResult, SandboxSpec } from "../../sandbox/mod";
import { actionSpec, sandboxWorld, tempDir } from "./helpers";
import type { SandboxWorld } from "./helpers";

let w: SandboxWorld;
let root: string;

beforeAll(async () => {
  w = await sandboxWorld();
  root = tempDir("lifetime");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function uniqueMarker(): string {
  return `lre-marker-${crypto.randomUUID()}`;
}

/** Host pids whose command line mentions `marker`. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").includes(marker)) found.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return found;
}

async function run(spec: SandboxSpec, opts: Partial<RunOptions> = {}): Promise<RunResult & { stdout: string; stderr: string }> {
  const out = join(root, `out-${crypto.randomUUID()}`);
  const err = `${out}.err`;
  const result = await runSandboxed(spec, { stdoutPath: out, stderrPath: err, timeoutMs: 20_000, ...opts });
  return { ...result, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8") };
}

const sh = (script: string, opts: Partial<RunOptions> = {}) => run(actionSpec(w, root, script), opts);

describe("exit status", () => {
  test("the command's exit code is reported as is", async () => {
    const r = await sh("echo out; echo err >&2; exit 3");
    expect(r).toMatchObject({ exitCode: 3, timedOut: false, stdout: "out\n", stderr: "err\n" });
    expect(r.signal).toBeUndefined();
  });

  test("death by signal is 128 + N and names the signal", async () => {
    const r = await sh("kill -KILL $$");
    expect(r).toMatchObject({ exitCode: 137, signal: "SIGKILL", timedOut: false });
  });

  test("a command bwrap cannot execute is a SandboxStartError naming it, never an exit code", async () => {
    // Such a failure must not be mistaken for (and cached as) the action's result.
    const attempt = run({ ...actionSpec(w, root, ""), argv: ["/usr/bin/true"] });
    await expect(attempt).rejects.toBeInstanceOf(SandboxStartError);
    await expect(attempt).rejects.toThrow("/usr/bin/true");
  });

  test("a missing bubblewrap binary is reported with what to do", async () => {
    await expect(sh("true", { bwrapPath: "/nonexistent/bwrap" })).rejects.toThrow(/install bubblewrap or pass bwrapPath/);
  });

  test("a setuid bubblewrap is refused", async () => {
    const dir = tempDir("setuid");
    try {
      const suid = join(dir, "bwrap");
      copyFileSync("/usr/bin/bwrap", suid);
      chmodSync(suid, 0o4755);
      await expect(sh("true", { bwrapPath: suid })).rejects.toThrow(/Refusing to run setuid bubblewrap/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a missing mount source is a SandboxStartError too", async () => {
    const spec = actionSpec(w, root, "true");
    const attempt = run({ ...spec, mounts: [...spec.mounts, { kind: "ro-bind", source: "/nonexistent/lre", target: "/opt" }] });
    await expect(attempt).rejects.toThrow(/Cannot start the sandbox.*nonexistent/);
  });
});

describe("timeouts", () => {
  test("a command past its deadline gets SIGTERM, and SIGKILL if it ignores it", async () => {
    const marker = uniqueMarker();
    const polite = await sh(`sleep 600; : ${marker}`, { timeoutMs: 200, killGraceMs: 5_000 });
    expect(polite).toMatchObject({ timedOut: true, exitCode: 143, signal: "SIGTERM" });

    const stubborn = await sh(`trap "" TERM; while :; do sleep 1; done; : ${marker}`, { timeoutMs: 200, killGraceMs: 300 });
    expect(stubborn.timedOut).toBe(true);
    expect(stubborn.exitCode).toBe(137);
    expect(processesWith(marker)).toEqual([]);
  });

  test("an AbortSignal kills the sandbox at once", async () => {
    const marker = uniqueMarker();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const r = await sh(`sleep 600; : ${marker}`, { signal: controller.signal });
    expect(r).toMatchObject({ aborted: true, timedOut: false });
    expect(processesWith(marker)).toEqual([]);
  });
});

describe("escaping processes", () => {
  test("a double-forked, setsid daemon does not outlive the action", async () => {
    const marker = uniqueMarker();
    const script = `(setsid sh -c "touch /build/daemon-${marker}; sleep 600; : ${marker}" &) ; while [ ! -e /build/daemon-${marker} ]; do sleep 0.01; done; echo parent-done`;
    const r = await sh(script);
    expect(r).toMatchObject({ exitCode: 0, stdout: "parent-done\n" });
    expect(existsSync(join(root, `daemon-${marker}`))).toBe(true); // it really ran
    expect(processesWith(marker)).toEqual([]);
  });

  test("a fork bomb hits the process cap, is killed at the deadline, and the host is unharmed", async () => {
    const marker = uniqueMarker();
    // Bounded first: 300 background sleeps against a cap of 32 processes.
    // The subshell dies at the first failed fork ("can't fork"); the count
    // uses builtins only since no fork is left for ls.
    const bounded = await sh(`(i=0; while [ $i -lt 300 ]; do sleep 600 & i=$((i+1)); done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n > /build/count-${marker}; : ${marker}`, { maxProcesses: 32 });
    expect(bounded.timedOut).toBe(false);
    const count = Number(readFileSync(join(root, `count-${marker}`), "utf8"));
    expect(count).toBeGreaterThan(1);
    expect(count).toBeLessThanOrEqual(32);

    // Then a real one. Its starter stays alive (exec needs no fork), so only
    // the deadline ends it; had it exited, the namespace teardown would have.
    const bomb = await sh(`b() { b | b & }; b; exec sleep 600; : ${marker}`, { maxProcesses: 64, timeoutMs: 1_500, killGraceMs: 0 });
    expect(bomb.timedOut).toBe(true);
    expect(processesWith(marker)).toEqual([]);
    const probe = Bun.spawnSync(["true"]);
    expect(probe.exitCode).toBe(0);
  });

  test("per-run cgroups are reused once empty, each run gets its own cap, and removeIdleCgroups clears them", async () => {
    const parent = findPidsCgroupDir();
    expect(parent).toBeDefined(); // CI runs as root with the pids controller
    const mine = () => readdirSync(parent!).filter((n) => n.startsWith(`lre-${process.pid}-`));
    const charged = () => mine().reduce((sum, n) => sum + Number(readFileSync(join(parent!, n, "pids.current"), "utf8")), 0);
    // Capped runs one after another: the count of cgroups this process made barely grows.
    const before = mine().length;
    for (const cap of [8, 16, 8, 16, 8, 16]) {
      const marker = uniqueMarker();
      // A reused cgroup may still be charged for the exited pid 1 of an
      // earlier run until the host's init reaps it (seconds on some hosts);
      // the cap leaves room for those, so a run may briefly hold that many more.
      const lingering = charged();
      const r = await sh(`(i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); done) 2>/dev/null; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n > /build/count-${marker}`, { maxProcesses: cap });
      expect(r.timedOut).toBe(false);
      expect(Number(readFileSync(join(root, `count-${marker}`), "utf8"))).toBeLessThanOrEqual(cap + lingering);
      expect(processesWith(marker)).toEqual([]);
    }
    expect(mine().length - before).toBeLessThanOrEqual(2);
    // Released in the background: wait until no live task is left in them.
    const until = Date.now() + 5_000;
    while (Date.now() < until && mine().some((n) => readFileSync(join(parent!, n, "cgroup.procs"), "utf8").trim() !== "")) await Bun.sleep(20);
    // Each returns to the pool once its release notices it empty (polled, so allow for a loaded machine).
    const pooled = Date.now() + 5_000;
    do {
      await Bun.sleep(20);
      removeIdleCgroups();
    } while (mine().length > 0 && Date.now() < pooled);
    expect(mine()).toEqual([]);
  });

  test("without a writable cgroup (non-root lre), the process cap holds through RLIMIT_NPROC", async () => {
    const dir = tempDir("nonroot");
    try {
      chmodSync(dir, 0o777);
      const child = Bun.spawn(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, join(import.meta.dir, "fixtures", "count-processes.ts"), w.view, w.nix.shell, dir],
        { stdout: "pipe", stderr: "inherit" },
      );
      expect(await child.exited).toBe(0);
      const seen = JSON.parse(await new Response(child.stdout).text()) as { result: { exitCode: number }; uid: number; count: number; cgroup: string | null };
      expect(seen.cgroup).toBeNull(); // so the rlimit path was the one taken
      expect(seen.uid).toBe(65534);
      expect(seen.result.exitCode).toBe(0);
      expect(seen.count).toBeGreaterThan(1);
      expect(seen.count).toBeLessThanOrEqual(20);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("runaway output is truncated at the cap and the action is killed", async () => {
    const r = await sh("yes lre", { maxOutputBytes: 10_000 });
    expect(r.outputLimitExceeded).toBe(true);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout.length).toBe(10_000);
    expect(r.stdout.startsWith("lre\nlre\n")).toBe(true);
  });

  test("output that fills the cap exactly in one read and goes on in a later one is still over the cap", async () => {
    const r = await sh("head -c 65536 /dev/zero; sleep 0.3; echo more; sleep 20", { maxOutputBytes: 65536 });
    expect(r.outputLimitExceeded).toBe(true);
    expect(r.timedOut).toBe(false);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout.length).toBe(65536);
  });

  test("output of exactly the cap is not over it", async () => {
    const r = await sh("head -c 65536 /dev/zero", { maxOutputBytes: 65536 });
    expect(r.outputLimitExceeded).toBeUndefined();
    expect(r.exitCode).toBe(0);
    expect(r.stdout.length).toBe(65536);
  });

  test("when lre itself is SIGKILLed, its sandboxes die with it", async () => {
    const marker = uniqueMarker();
    const dir = tempDir("parent-dies");
    const holder = Bun.spawn([process.execPath, join(import.meta.dir, "fixtures", "hold-sandbox.ts"), dir, marker], { stdout: "pipe", stderr: "inherit" });
    try {
      const reader = holder.stdout.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toBe("ready\n");
      expect(processesWith(marker).length).toBeGreaterThan(0);
      holder.kill("SIGKILL");
      await holder.exited;
      // die-with-parent is asynchronous: poll (bounded) until the kernel is done.
      for (let i = 0; i < 200 && processesWith(marker).length > 0; i++) await Bun.sleep(10);
      expect(processesWith(marker)).toEqual([]);
    } finally {
      holder.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("resources", () => {
  test("stdout and stderr files are written even when empty", async () => {
    const out = join(root, "empty.out");
    const r = await runSandboxed(actionSpec(w, root, "true"), { stdoutPath: out, stderrPath: `${out}.err`, timeoutMs: 20_000 });
    expect(r.exitCode).toBe(0);
    expect(statSync(out).size).toBe(0);
    expect(statSync(`${out}.err`).size).toBe(0);
  });
});
