/**
 * What an action can and cannot see, probed from inside real sandboxes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { runSandboxed } from "../../sandbox/mod";
import type { RunResult, SandboxSpec } from "../../sandbox/mod";
import { actionSpec, sandboxWorld, tempDir } from "./helpers";
import type { SandboxWorld } from "./helpers";

let w: SandboxWorld;
let root: string;

beforeAll(async () => {
  w = await sandboxWorld();
  root = tempDir("hermetic");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function run(spec: SandboxSpec): Promise<RunResult & { stdout: string; stderr: string }> {
  const out = join(root, `out-${crypto.randomUUID()}`);
  const err = `${out}.err`;
  const result = await runSandboxed(spec, { stdoutPath: out, stderrPath: err, timeoutMs: 20_000 });
  return { ...result, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8") };
}

const sh = (script: string, extra: Partial<SandboxSpec> = {}) => run(actionSpec(w, root, script, extra));

describe("filesystem", () => {
  test("the root holds only what the spec mounts: no host /usr, /bin, /etc", async () => {
    const r = await sh("ls /; for p in /usr /bin /etc/passwd /etc /root /var; do test -e $p && echo LEAK $p; done; true");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(["build", "dev", "nix", "proc", "tmp"]);
  });

  test("/nix/store holds exactly the declared closure; the outsider path does not exist", async () => {
    const r = await sh(`ls /nix/store; test -e ${w.nix.outsider} && echo LEAK; cat ${w.nix.outsider}/secret; true`);
    expect(r.stdout.trim().split("\n")).toEqual(w.closure.paths.map((p) => basename(p)));
    expect(r.stderr).toContain("No such file or directory");
  });

  test("paths included only transitively are readable and executable", async () => {
    // toolchain-b/bin/hello's shebang is toolchain-a's sh, a symlink into busybox.
    const r = await sh(`${w.nix.toolchainB}/bin/hello && cat ${w.nix.toolchainB}/share/greeting && ${w.nix.busybox}/bin/busybox true`);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe("hello from toolchain-b\nhello from toolchain-b\n");
  });

  test("the store is read-only, even for uid 0 inside", async () => {
    const r = await sh(`id -u; touch /nix/store/new; touch ${w.nix.toolchainA}/bin/new; echo x > ${w.nix.toolchainB}/share/greeting; rm ${w.nix.toolchainA}/bin/sh; true`);
    expect(r.stdout).toBe("0\n");
    const erofs = r.stderr.split("\n").filter((l) => l.includes("Read-only file system"));
    expect(erofs).toHaveLength(4);
    expect(readFileSync(`${w.nix.toolchainB}/share/greeting`, "utf8")).toBe("hello from toolchain-b\n");
  });

  test("/tmp is private to the sandbox and capped in size", async () => {
    const hostMarker = `/tmp/lre-host-marker-${process.pid}`;
    writeFileSync(hostMarker, "host");
    try {
      const r = await sh(`test -e ${hostMarker} && echo LEAK; dd if=/dev/zero of=/tmp/big bs=1024 count=2048; echo dd=$?; ls /tmp`);
      expect(r.stdout).not.toContain("LEAK");
      expect(r.stderr).toContain("No space left on device");
      expect(r.stdout).toContain("dd=1");
    } finally {
      rmSync(hostMarker, { force: true });
    }
  });

  test("the input root is writable and what the action writes lands on the host", async () => {
    const r = await sh("echo built > /build/output.txt && pwd");
    expect(r.stdout).toBe("/build\n");
    expect(readFileSync(join(root, "output.txt"), "utf8")).toBe("built\n");
  });
});

describe("environment and identity", () => {
  test("the environment is exactly the one given (bwrap adds only PWD, equal to cwd)", async () => {
    const env = { PATH: `${w.nix.toolchainA}/bin`, LANG: "C", WEIRD: "a b=c\td" };
    // env as the command itself: a shell would add SHLVL of its own.
    const r = await sh("unused", { env, argv: [`${w.nix.toolchainA}/bin/env`] });
    const seen = Object.fromEntries(r.stdout.trimEnd().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    expect(seen).toEqual({ ...env, PWD: "/build" });
  });

  test("no capabilities and no nested user namespaces", async () => {
    const r = await sh("grep CapEff /proc/self/status; unshare -U true && echo NESTED; true");
    expect(r.stdout).toBe("CapEff:\t0000000000000000\n");
  });

  test("hostname is the one given", async () => {
    const r = await sh("hostname", { hostname: "lre-action" });
    expect(r.stdout).toBe("lre-action\n");
  });

  test("very long option lists go through --args and arrive intact", async () => {
    // 200 variables of 1000 bytes: well past what we put on bwrap's own argv.
    const env: Record<string, string> = { PATH: `${w.nix.toolchainA}/bin` };
    for (let i = 0; i < 200; i++) env[`V${i}`] = String(i % 10).repeat(1000);
    const r = await sh('env | grep -c "^V[0-9]*=" ; echo "$V7" | wc -c', { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe("200\n1001\n");
  });
});

describe("network", () => {
  test("a TCP port listening on the host's loopback is unreachable without network; reachable with host network", async () => {
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: { open: (s) => { s.write("hello-from-host\n"); s.end(); }, data: () => {} },
    });
    try {
      const probe = `nc -w 2 127.0.0.1 ${server.port} </dev/null; echo rc=$?; cat /proc/net/dev | tail -n +3 | cut -d: -f1`;
      const isolated = await sh(probe);
      expect(isolated.stdout).not.toContain("hello-from-host");
      expect(isolated.stdout).not.toContain("rc=0");
      // Only loopback exists in the private namespace.
      expect(isolated.stdout.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("rc="))).toEqual(["lo"]);
      // The same probe with host networking reaches the server: the probe itself works.
      const shared = await sh(`nc -w 2 127.0.0.1 ${server.port} </dev/null`, { network: "host" });
      expect(shared.stdout).toBe("hello-from-host\n");
    } finally {
      server.stop(true);
    }
  });
});
