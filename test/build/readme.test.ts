import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "../cli/lre-process";

const readme = readFileSync(join(REPO, "README.md"), "utf8");
const [install, fullTest] = readme.split("\n").slice(0, 2).map((l) => l.trim());
const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { scripts: Record<string, string> };

describe("README opening lines", () => {
  test("line 1 installs bubblewrap and dependencies, builds, and starts the server", () => {
    expect(install).toBe("apt-get update && apt-get install -y bubblewrap && npm install && npm run build && ./dist/lre serve");
  });

  test("line 2 installs every tool the tests use, then runs the whole suite", () => {
    expect(fullTest).toStartWith("apt-get update && apt-get install -y ");
    expect(fullTest).toEndWith(" && npm install && npm test");
    for (const p of ["bubblewrap", "nix-bin", "busybox-static", "bazel-bootstrap", "zstd", "maven", "unzip"]) {
      expect(fullTest?.split(" ")).toContain(p);
    }
  });

  test(".ci/run runs exactly line 2, under set -euo pipefail", () => {
    const ci = readFileSync(join(REPO, ".ci", "run"), "utf8").split("\n");
    expect(ci[0]).toBe("#!/usr/bin/env bash");
    expect(ci).toContain("set -euo pipefail");
    const commands = ci.filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("set ") && !l.startsWith("cd "));
    expect(commands).toEqual([fullTest as string]);
  });

  test("npm test is the whole suite: type check, bun test, build, binary smoke test", () => {
    expect(pkg.scripts.test).toBe("npm run typecheck && npm run test:unit && npm run build && npm run smoke");
  });

  test("every script runs the pinned bun, never one from PATH", () => {
    for (const [name, cmd] of Object.entries(pkg.scripts)) {
      const words = cmd.split(/\s+/);
      expect({ name, bare: words.filter((w) => w === "bun" || w === "bunx" || w === "tsc") }).toEqual({ name, bare: [] });
    }
  });
});
