import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTokenFile, parseTokenFile, TokenFileError } from "../../src/grpc/auth/token-file";
import { requirementOf } from "../../src/grpc/auth/scopes";
import { createAcService } from "../../src/grpc/ac-service";
import { createByteStreamService } from "../../src/grpc/bytestream-service";
import { createCapabilitiesService } from "../../src/grpc/capabilities-service";
import { createCasService } from "../../src/grpc/cas-service";
import { ExecutionService } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { MemoryActionCache } from "../../src/ac/memory-action-cache";

const A = "a".repeat(40);
const B = "b".repeat(40);

describe("token file", () => {
  test("one token per line with its scopes; comments, blank lines and extra spaces are ignored", () => {
    const table = parseTokenFile(`# laptops\n\n  ${A}   read,write \n\t# CI\n${B} read,write,execute,read\n`, "t");
    expect(table.size).toBe(2);
    expect([...(table.scopesOf(A) ?? [])]).toEqual(["read", "write"]);
    expect([...(table.scopesOf(B) ?? [])]).toEqual(["read", "write", "execute"]);
    expect(table.scopesOf("c".repeat(40))).toBeUndefined();
    expect(table.scopesOf(A.slice(1))).toBeUndefined();
    expect(table.scopesOf("")).toBeUndefined();
  });

  test.each([
    [`${A}\n`, "line 1: expected \"TOKEN SCOPE[,SCOPE...]\""],
    [`# ok\n${A} read write\n`, "line 2: expected"],
    [`${A} read,admin\n`, 'line 1: unknown scope "admin"; scopes are read, write, execute'],
    [`${A} read,\n`, 'unknown scope ""'],
    [`short read\n`, "line 1: the token is 5 characters; use at least 16"],
    [`${A} read\n\n${A} write\n`, "line 3: this token already appears on an earlier line"],
    [`# nothing here\n\n`, "holds no tokens"],
    [`${"é".repeat(20)} read\n`, "printable ASCII"],
  ])("%p is refused, naming the line", (text, message) => {
    expect(() => parseTokenFile(text, 'token file "t"')).toThrow(TokenFileError);
    expect(() => parseTokenFile(text, 'token file "t"')).toThrow(message);
  });

  test("a missing file is an error naming it", () => {
    const path = join(mkdtempSync(join(tmpdir(), "lre-tokens-")), "absent");
    expect(() => loadTokenFile(path)).toThrow(`cannot read token file "${path}"`);
    writeFileSync(path, `${A} read\n`);
    expect(loadTokenFile(path).size).toBe(1);
  });
});

describe("scopes", () => {
  test("every method lre serves has a scope, or is GetCapabilities", () => {
    const cas = new MemoryBlobStore();
    const ac = new MemoryActionCache();
    const digests = { defaultDigestFn: "sha256" as const };
    const definitions = [
      createCapabilitiesService({ execEnabled: true }).definition,
      createCasService({ cas, digests }).definition,
      createByteStreamService({ cas, digests }).definition,
      createAcService({ ac, cas, digests }).definition,
      ExecutionService,
    ];
    const seen: Record<string, string | undefined> = {};
    for (const d of definitions) for (const m of Object.values(d)) seen[m.path.slice(m.path.lastIndexOf("/") + 1)] = requirementOf(m.path);
    expect(seen).toEqual({
      GetCapabilities: "public",
      FindMissingBlobs: "read",
      BatchReadBlobs: "read",
      GetTree: "read",
      BatchUpdateBlobs: "write",
      Read: "read",
      Write: "write",
      QueryWriteStatus: "read",
      GetActionResult: "read",
      UpdateActionResult: "write",
      Execute: "execute",
      WaitExecution: "execute",
    });
    expect(requirementOf("/some.Other/Method")).toBeUndefined();
  });
});
