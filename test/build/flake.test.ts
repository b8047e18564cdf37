import { expect, test } from "bun:test";
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
