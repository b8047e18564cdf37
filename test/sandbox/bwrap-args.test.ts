import { describe, expect, test } from "bun:test";
import { actionSandboxSpec, toBwrapArgs } from "../../sandbox/mod";
import type { SandboxSpec } from "../../sandbox/mod";

const ISOLATION = ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--new-session"];

describe("toBwrapArgs", () => {
  test("a minimal offline action: isolation flags, cleared env, cwd, then the command", () => {
    const spec: SandboxSpec = {
      mounts: [],
      env: {},
      cwd: "/",
      argv: ["/nix/store/00000000000000000000000000000000-sh/bin/sh", "-c", "true"],
      network: "none",
    };
    expect(toBwrapArgs(spec)).toEqual([
      ...ISOLATION,
      "--clearenv",
      "--chdir", "/",
      "--", "/nix/store/00000000000000000000000000000000-sh/bin/sh", "-c", "true",
    ]);
  });

  test("a typical action: closure view at /nix/store, execroot, sized /tmp, proc, dev, sorted env", () => {
    const spec: SandboxSpec = {
      mounts: [
        { kind: "tmpfs", target: "/tmp", sizeBytes: 1048576 },
        { kind: "bind", source: "/var/lib/lre/exec/42/root", target: "/build/root" },
        { kind: "ro-bind", source: "/nix/var/lre/views/abc", target: "/nix/store" },
        { kind: "proc", target: "/proc" },
        { kind: "dev", target: "/dev" },
      ],
      env: { PATH: "/nix/store/x/bin", HOME: "/build", A: "1" },
      cwd: "/build/root/pkg",
      argv: ["gcc", "-c", "a.c"],
      network: "none",
      hostname: "lre",
    };
    expect(toBwrapArgs(spec)).toEqual([
      ...ISOLATION,
      "--hostname", "lre",
      "--clearenv",
      "--setenv", "A", "1",
      "--setenv", "HOME", "/build",
      "--setenv", "PATH", "/nix/store/x/bin",
      // depth 1, in the caller's order
      "--size", "1048576", "--tmpfs", "/tmp",
      "--proc", "/proc",
      "--dev", "/dev",
      // depth 2, in the caller's order
      "--bind", "/var/lib/lre/exec/42/root", "/build/root",
      "--ro-bind", "/nix/var/lre/views/abc", "/nix/store",
      "--chdir", "/build/root/pkg",
      "--", "gcc", "-c", "a.c",
    ]);
  });

  test("host network shares the net namespace; dirs, symlinks and unsized tmpfs keep parent-first order", () => {
    const spec: SandboxSpec = {
      mounts: [
        { kind: "symlink", target: "/build/out/latest", linkTo: "../in" },
        { kind: "dir", target: "/build/out" },
        { kind: "tmpfs", target: "/build" },
      ],
      env: { X: "--" },
      cwd: "/build",
      argv: ["/bin/x", "--", "--setenv"],
      network: "host",
    };
    expect(toBwrapArgs(spec)).toEqual([
      ...ISOLATION,
      "--share-net",
      "--clearenv",
      "--setenv", "X", "--",
      "--tmpfs", "/build",
      "--dir", "/build/out",
      "--symlink", "../in", "/build/out/latest",
      "--chdir", "/build",
      "--", "/bin/x", "--", "--setenv",
    ]);
  });

  test("rejects specs bwrap would misread or that could escape", () => {
    const base: SandboxSpec = { mounts: [], env: {}, cwd: "/", argv: ["/x"], network: "none" };
    expect(() => toBwrapArgs({ ...base, argv: [] })).toThrow(/argv is empty/);
    expect(() => toBwrapArgs({ ...base, cwd: "relative" })).toThrow(/must be absolute/);
    expect(() => toBwrapArgs({ ...base, env: { "A=B": "1" } })).toThrow(/environment variable/);
    expect(() => toBwrapArgs({ ...base, mounts: [{ kind: "bind", source: "/a/../etc", target: "/x" }] })).toThrow(/without "\.\."/);
    expect(() => toBwrapArgs({ ...base, mounts: [{ kind: "tmpfs", target: "/tmp", sizeBytes: 0 }] })).toThrow(/positive integer/);
    expect(() => toBwrapArgs({ ...base, hostname: "bad host" })).toThrow(/hostname/);
  });
});

describe("actionSandboxSpec", () => {
  test("the standard action layout: closure view as /nix/store, input root in place, proc, dev, capped /tmp", () => {
    const spec = actionSandboxSpec({
      closureView: "/nix/var/lre/views/abc",
      inputRoot: "/var/lib/lre/exec/7/root",
      workingDirectory: "pkg/sub",
      argv: ["/nix/store/00000000000000000000000000000000-sh/bin/sh", "-c", "true"],
      env: { PATH: "/nix/store/00000000000000000000000000000000-sh/bin" },
    });
    expect(toBwrapArgs(spec)).toEqual([
      ...ISOLATION,
      "--hostname", "localhost",
      "--clearenv",
      "--setenv", "PATH", "/nix/store/00000000000000000000000000000000-sh/bin",
      "--proc", "/proc",
      "--dev", "/dev",
      "--size", String(512 * 1024 * 1024), "--tmpfs", "/tmp",
      "--ro-bind", "/nix/var/lre/views/abc", "/nix/store",
      "--bind", "/var/lib/lre/exec/7/root", "/var/lib/lre/exec/7/root",
      "--chdir", "/var/lib/lre/exec/7/root/pkg/sub",
      "--", "/nix/store/00000000000000000000000000000000-sh/bin/sh", "-c", "true",
    ]);
  });

  test("a working directory may not leave the input root", () => {
    expect(() => actionSandboxSpec({ closureView: "/v", inputRoot: "/r", workingDirectory: "../etc", argv: ["/x"], env: {} })).toThrow(/inside the input root/);
  });
});
