import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { lre, tempDir } from "./lre-process";

// The test line installs bubblewrap and nix-bin, so on a machine set up as the
// README says every check passes; these tests state that and the failures.

describe("lre doctor", () => {
  test("on this machine every check passes and it exits 0", async () => {
    const d = tempDir();
    const r = await lre(["doctor", "--data-dir", join(d, "data"), "--socket", join(d, "run", "lre.sock")]);
    expect(r.stdout).toMatch(/^OK +bubblewrap: \S*bwrap \(bubblewrap [\d.]+\)$/m);
    expect(r.stdout).toMatch(/^OK +namespaces: /m);
    expect(r.stdout).toMatch(/^OK +nix store: \/nix\/store readable/m);
    expect(r.stdout).toMatch(/^OK +nix database: \/nix\/var\/nix\/db\/db\.sqlite readable \(\d+ valid paths\)$/m);
    expect(r.stdout).toContain(`data dir: ${join(d, "data")} will be created (under ${d})`);
    expect(r.stdout).toMatch(/^OK +free disk: .* free at /m);
    expect(r.stdout).toMatch(/^OK +socket: /m);
    expect(r.stdout).toContain("lre serve can run on this machine");
    expect(r.exitCode).toBe(0);
  });

  test("with bwrap not on PATH it fails and says how to install it", async () => {
    const d = tempDir();
    // A PATH with the usual tools but no bwrap: symlink everything doctor may need except it.
    const bin = join(d, "bin");
    mkdirSync(bin);
    symlinkSync("/bin/sh", join(bin, "sh"));
    const r = await lre(["doctor", "--data-dir", join(d, "data"), "--socket", join(d, "lre.sock")], { env: { PATH: bin } });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(`FAIL  bubblewrap: bwrap not found on PATH (${bin})`);
    expect(r.stdout).toContain("fix: apt-get install -y bubblewrap");
    expect(r.stdout).toMatch(/^FAIL +namespaces: not checked/m);
    // Other checks still run and report.
    expect(r.stdout).toMatch(/^OK +nix database: /m);
    expect(r.stdout).toContain("problem(s) above block lre serve");
  });

  test("an existing writable data dir is probed by writing to it, and left as it was", async () => {
    const d = tempDir();
    const r = await lre(["doctor", "--data-dir", d, "--socket", join(d, "lre.sock")]);
    expect(r.stdout).toContain(`OK    data dir: ${d} writable`);
    expect(readdirSync(d)).toEqual([]);
  });

  test("a data dir that cannot be written fails with the fix", async () => {
    const d = tempDir();
    const r = await lre(["doctor", "--data-dir", "/proc/lre-data", "--socket", join(d, "lre.sock")]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/FAIL  data dir: data dir "\/proc\/lre-data" cannot be (written|created)/);
    expect(r.stdout).toContain("fix: mkdir -p /proc/lre-data");
  });

  test("a socket directory open to other users is a warning with chmod, not a failure", async () => {
    const d = tempDir();
    const open = join(d, "shared");
    mkdirSync(open);
    chmodSync(open, 0o755);
    const r = await lre(["doctor", "--data-dir", join(d, "data"), "--socket", join(open, "lre.sock")]);
    expect(r.stdout).toContain(`WARN  socket: ${open} is accessible to other users (mode 755)`);
    expect(r.stdout).toContain(`fix: chmod 700 ${open}`);
    expect(r.exitCode).toBe(0);
  });

  test("a socket path too long for a Unix socket fails", async () => {
    const d = tempDir();
    const r = await lre(["doctor", "--data-dir", join(d, "data"), "--socket", join(d, "x".repeat(120), "lre.sock")]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toMatch(/^FAIL +socket: .* longer than the 107 bytes/m);
  });
});
