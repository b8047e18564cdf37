import { expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "../cli/lre-process";

test("flake.nix parses and defines the package, app and dev shell", () => {
  // nix-instantiate comes from nix-bin, which the test line installs.
  const r = Bun.spawnSync(["nix-instantiate", "--parse", join(REPO, "flake.nix")], { stdout: "pipe", stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  expect(r.exitCode).toBe(0);
  const parsed = r.stdout.toString();
  for (const attr of ["packages", "apps", "devShells", "default"]) expect(parsed).toContain(attr);
  expect(parsed).toContain("scripts/build.ts");
  expect(parsed).toContain("serve");
});

test("the node_modules hash pinned in flake.nix is what the flake's npm install produces", async () => {
  const flake = await Bun.file(join(REPO, "flake.nix")).text();
  const command = "npm install --ignore-scripts --no-audit --no-fund --no-save";
  // The test runs the flake's own command; if the flake changes it, this must follow.
  expect(flake).toContain(command);
  const pinned = /outputHash = "([0-9a-z]+)";/.exec(flake)?.[1];
  expect(pinned).toBeString();

  const dir = mkdtempSync(join(tmpdir(), "lre-flake-"));
  try {
    for (const f of ["package.json", "package-lock.json"]) copyFileSync(join(REPO, f), join(dir, f));
    const install = Bun.spawnSync(["sh", "-c", `${command} && rm -f node_modules/.package-lock.json`], {
      cwd: dir,
      env: { ...process.env, HOME: dir },
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(install.stderr.toString()).not.toContain("npm error");
    expect(install.exitCode).toBe(0);
    const hash = Bun.spawnSync(["nix-hash", "--type", "sha256", "--base32", join(dir, "node_modules")], { stdout: "pipe", stderr: "pipe" });
    expect(hash.exitCode).toBe(0);
    // On a mismatch: put this hash into flake.nix's outputHash.
    expect(hash.stdout.toString().trim()).toBe(pinned!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 300_000);
