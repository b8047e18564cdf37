import { describe, expect, test } from "bun:test";
import { validateActionResult } from "../../src/ac/validate-action-result";
import { EMPTY_HASH } from "../../src/digest/digest";
import { GrpcCode, isRpcError } from "../../src/errors";
import type { ActionResult } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { ActionResult as AR } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

const ok = { hash: EMPTY_HASH.sha256, sizeBytes: 0 };

function rejects(result: ActionResult, mention: string): void {
  let caught: unknown;
  try {
    validateActionResult(result, "sha256");
  } catch (err) {
    caught = err;
  }
  expect(isRpcError(caught, GrpcCode.INVALID_ARGUMENT)).toBe(true);
  expect((caught as Error).message).toContain(mention);
}

describe("validateActionResult", () => {
  test("accepts a well-formed result", () => {
    validateActionResult(
      AR.fromPartial({
        outputFiles: [{ path: "bazel-out/k8/bin/a.o", digest: ok }, { path: "b", digest: ok }],
        outputDirectories: [{ path: "out/dir", treeDigest: ok }],
        outputSymlinks: [{ path: "link", target: "../elsewhere" }],
        stdoutDigest: ok,
      }),
      "sha256",
    );
  });

  for (const [path, why] of [
    ["/etc/passwd", "absolute"],
    ["../escape", '".."'],
    ["a/../../b", '".."'],
    ["a//b", "empty segment"],
    ["a/", "empty segment"],
    ["./a", '"."'],
    ["", "empty"],
    ["a\0b", "NUL"],
  ] as const) {
    test(`rejects output path ${JSON.stringify(path)} (${why})`, () => {
      rejects(AR.fromPartial({ outputFiles: [{ path, digest: ok }] }), why);
      rejects(AR.fromPartial({ outputDirectories: [{ path, treeDigest: ok }] }), why);
      rejects(AR.fromPartial({ outputSymlinks: [{ path, target: "t" }] }), why);
    });
  }

  test("rejects a missing digest", () => {
    rejects(AR.fromPartial({ outputFiles: [{ path: "a" }] }), "output_files[0]");
    rejects(AR.fromPartial({ outputDirectories: [{ path: "d" }] }), "tree_digest");
  });

  test("rejects malformed and negative digests", () => {
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: { hash: "ABC", sizeBytes: 1 } }] }), "hex");
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: { hash: EMPTY_HASH.sha256.toUpperCase(), sizeBytes: 0 } }] }), "hex");
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: { hash: EMPTY_HASH.sha256, sizeBytes: -1 } }] }), "size -1");
    rejects(AR.fromPartial({ stdoutDigest: { hash: "", sizeBytes: 0 } }), "stdout_digest");
    rejects(AR.fromPartial({ stderrDigest: { hash: ok.hash, sizeBytes: 1.5 } }), "stderr_digest");
  });

  test("rejects duplicate output paths, also across files, directories and symlinks", () => {
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: ok }, { path: "a", digest: ok }] }), "repeats");
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: ok }], outputDirectories: [{ path: "a", treeDigest: ok }] }), "repeats");
    rejects(AR.fromPartial({ outputFiles: [{ path: "a", digest: ok }], outputSymlinks: [{ path: "a", target: "b" }] }), "repeats");
  });

  test("rejects a symlink without a target", () => {
    rejects(AR.fromPartial({ outputSymlinks: [{ path: "l", target: "" }] }), "target");
  });
});
