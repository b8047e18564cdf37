import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ClosureResolver, NotAStorePathError, UnknownStorePathError, findStorePathRefs, makeClosure, parseStorePath } from "../../sandbox/mod";
import { ensureNixToolchain } from "../support/nix-fixture";
import type { NixToolchain } from "../support/nix-fixture";
import { tempDir } from "./helpers";

let nix: NixToolchain;
let resolver: ClosureResolver;

beforeAll(async () => {
  nix = await ensureNixToolchain();
  resolver = new ClosureResolver();
});
afterAll(() => resolver.close());

describe("ClosureResolver", () => {
  test("a store path's closure includes what it refers to, transitively, and nothing else", () => {
    const closure = resolver.resolve([nix.toolchainB]);
    expect(closure.paths).toEqual([nix.busybox, nix.toolchainA, nix.toolchainB].sort());
    expect(closure.paths).not.toContain(nix.outsider);
  });

  test("a path without references is its own closure", () => {
    expect(resolver.resolve([nix.busybox]).paths).toEqual([nix.busybox]);
    expect(resolver.resolve([nix.outsider]).paths).toEqual([nix.outsider]);
  });

  test("roots may point inside store paths; duplicates and order do not change the result or its hash", () => {
    const a = resolver.resolve([`${nix.toolchainB}/bin/hello`, nix.shell]);
    const b = resolver.resolve([nix.toolchainA, nix.toolchainB, nix.toolchainB]);
    expect(a).toEqual(b);
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.hash).toBe(makeClosure([...a.paths].reverse()).hash);
    expect(resolver.resolve([nix.toolchainA]).hash).not.toBe(a.hash);
  });

  test("an unknown store path is a typed error naming it and saying how to fix it", () => {
    const missing = "/nix/store/00000000000000000000000000000000-not-built";
    let caught: unknown;
    try {
      resolver.resolve([nix.toolchainA, `${missing}/bin/tool`]);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UnknownStorePathError);
    const err = caught as UnknownStorePathError;
    expect(err.path).toBe(missing);
    expect(err.message).toContain(missing);
    expect(err.message).toContain("nix-store --realise");
  });

  test("something that is not a store path is rejected as such", () => {
    expect(() => resolver.resolve(["/usr/bin/gcc"])).toThrow(NotAStorePathError);
    expect(() => resolver.resolve(["/nix/store/tooshort-x"])).toThrow(NotAStorePathError);
    expect(() => resolver.resolve([`${nix.toolchainA}@1`])).toThrow(NotAStorePathError);
  });

  test("parseStorePath checks the shape only: the store path containing a path, or undefined", () => {
    expect(parseStorePath(`${nix.toolchainB}/bin/hello`)).toBe(nix.toolchainB);
    expect(parseStorePath(nix.toolchainB)).toBe(nix.toolchainB);
    const unknown = "/nix/store/00000000000000000000000000000000-not-built";
    expect(parseStorePath(unknown)).toBe(unknown);
    for (const bad of ["/nix/store/garbage", "/nix/store/abc-../x", "/usr/bin", `${nix.toolchainA}@1`, "/nix/store/", "nix/store/x"]) {
      expect(parseStorePath(bad)).toBeUndefined();
    }
  });

  test("paths added to the store after the resolver opened the database are found", () => {
    const before = resolver.resolve([nix.toolchainA]); // keep the connection open across the add
    const dir = tempDir("fresh-path");
    const content = join(dir, "lre-fresh");
    mkdirSync(content);
    writeFileSync(join(content, "stamp"), `${process.pid}-${Date.now()}-${Math.random()}`);
    const added = Bun.spawnSync(["nix-store", "--add", content], { stdout: "pipe", stderr: "pipe" });
    expect(added.exitCode).toBe(0);
    const fresh = added.stdout.toString().trim();
    try {
      expect(resolver.resolve([fresh]).paths).toEqual([fresh]);
      expect(resolver.resolve([nix.toolchainA])).toEqual(before);
    } finally {
      Bun.spawnSync(["nix-store", "--delete", fresh], { stdout: "ignore", stderr: "ignore" });
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => resolver.resolve([fresh])).toThrow(UnknownStorePathError);
  });
});

describe("findStorePathRefs", () => {
  test("extracts store paths from argv and env strings, once each, in order of appearance", () => {
    const a = "/nix/store/abcdfghijklmnpqrsvwxyz0123456789-gcc-13.2.0";
    const b = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-binutils-2.41";
    const text = `PATH=${a}/bin:${b}/bin:/usr/bin CC=${a}/bin/gcc -I${b}/include`;
    expect(findStorePathRefs(text)).toEqual([a, b]);
  });

  test("ignores look-alikes: wrong hash length, letters outside Nix's base32, other directories", () => {
    expect(findStorePathRefs("/nix/store/abc-short /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-e /opt/store/abcdfghijklmnpqrsvwxyz0123456789-x")).toEqual([]);
  });
});

describe("ClosureResolver construction", () => {
  test("takes the database path as options or as a plain string; a missing database is explained", () => {
    const byString = new ClosureResolver("/nix/var/nix/db/db.sqlite");
    expect(byString.resolve([nix.busybox]).paths).toEqual([nix.busybox]);
    byString.close();
    const missing = new ClosureResolver({ dbPath: "/nonexistent/db.sqlite" });
    expect(() => missing.resolve([nix.busybox])).toThrow(/Cannot read the Nix database "\/nonexistent\/db.sqlite"/);
  });
});
