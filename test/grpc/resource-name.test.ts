import { describe, expect, test } from "bun:test";
import { EMPTY_HASH } from "../../src/digest/digest";
import { type DigestConfig, instanceDefaultFn, parseInstanceName, requestDigestFn } from "../../src/digest/instance-name";
import { parseReadResourceName, parseWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode, RpcError } from "../../src/errors";
import { DigestFunction_Value } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

const H = "a".repeat(64);
const SHA: DigestConfig = { defaultDigestFn: "sha256" };
const BUCK2_BLAKE3: DigestConfig = { defaultDigestFn: "sha256", instanceDigestFn: { "buck2/b3": "blake3" } };

function invalid(fn: () => unknown): RpcError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RpcError);
    expect((err as RpcError).code).toBe(GrpcCode.INVALID_ARGUMENT);
    return err as RpcError;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("read resource names", () => {
  test.each([
    [`blobs/${H}/5`, "", "sha256", "identity"],
    [`main/blobs/${H}/5`, "main", "sha256", "identity"],
    [`a/b/c/blobs/${H}/5`, "a/b/c", "sha256", "identity"],
    [`blobs/blake3/${H}/5`, "", "blake3", "identity"],
    [`x/compressed-blobs/zstd/${H}/0`, "x", "sha256", "zstd"],
    [`compressed-blobs/zstd/blake3/${H}/12`, "", "blake3", "zstd"],
    [`blobs/sha256/${H}/5`, "", "sha256", "identity"],
  ] as const)("%s", (name, instance, fn, compression) => {
    const r = parseReadResourceName(name, SHA);
    expect(r.instance).toBe(instance);
    expect(r.digest.fn).toBe(fn);
    expect(r.digest.hash).toBe(H);
    expect(r.compression).toBe(compression);
  });

  test("a name without a digest function takes the instance's default (Buck2 on a BLAKE3 instance)", () => {
    expect(parseReadResourceName(`buck2/b3/blobs/${H}/1`, BUCK2_BLAKE3).digest.fn).toBe("blake3");
    expect(parseReadResourceName(`other/blobs/${H}/1`, BUCK2_BLAKE3).digest.fn).toBe("sha256");
    // An explicit segment still wins over the instance default.
    expect(parseReadResourceName(`buck2/b3/blobs/sha256/${H}/1`, BUCK2_BLAKE3).digest.fn).toBe("sha256");
  });

  test.each([
    ["", "empty"],
    [`${H}/5`, "no keyword"],
    [`blobs/${H}`, "no size"],
    [`blobs/${H}/5/extra`, "trailing segments"],
    [`blobs/${H}/-1`, "negative size"],
    [`blobs/${H}/+5`, "signed size"],
    [`blobs/${H}/05`, "leading zero"],
    [`blobs/${H}/5.0`, "fractional size"],
    [`blobs/${H}/99999999999999999`, "size beyond 2^53"],
    [`blobs/${H.toUpperCase()}/5`, "upper-case hash"],
    [`blobs/${"a".repeat(63)}/5`, "short hash"],
    [`blobs/${"a".repeat(40)}/5`, "SHA-1 length hash"],
    [`blobs/sha1/${H}/5`, "unsupported digest function"],
    [`blobs/md5/${H}/5`, "unsupported digest function"],
    [`compressed-blobs/deflate/${H}/5`, "unsupported compressor"],
    [`compressed-blobs/identity/${H}/5`, "identity as compressor"],
    [`compressed-blobs/${H}/5`, "missing compressor"],
    [`../blobs/${H}/5`, "dot-dot instance"],
    [`a/../blobs/${H}/5`, "dot-dot segment"],
    [`./blobs/${H}/5`, "dot instance"],
    [`/blobs/${H}/5`, "leading slash"],
    [`a//blobs/${H}/5`, "empty segment"],
    [`uploads/u/blobs/${H}/5`, "upload name used for a read"],
    [`actions/blobs/${H}/5`, "reserved word first"],
    [`a b/blobs/${H}/5`, "space in instance"],
    [`a\u0000/blobs/${H}/5`, "NUL in instance"],
    [`é/blobs/${H}/5`, "non-ASCII instance"],
    [`${"x/".repeat(3000)}blobs/${H}/5`, "too long"],
  ])("rejects %j (%s) with the expected grammar", (name) => {
    const err = invalid(() => parseReadResourceName(name, SHA));
    expect(err.message).toContain("expected {instance/}blobs/{digest_function/}{hash}/{size}");
  });
});

describe("write resource names", () => {
  test("instance, upload id, digest function, compressor and ignored metadata", () => {
    const w = parseWriteResourceName(`a/b/uploads/4f1c-uuid/compressed-blobs/zstd/blake3/${H}/10/some/metadata`, SHA);
    expect(w).toEqual({ instance: "a/b", uuid: "4f1c-uuid", digest: { fn: "blake3", hash: H, sizeBytes: 10 }, compression: "zstd" });
    expect(parseWriteResourceName(`uploads/u/blobs/${EMPTY_HASH.sha256}/0`, SHA).digest.sizeBytes).toBe(0);
  });

  test.each([
    [`blobs/${H}/5`, "read name"],
    [`uploads/blobs/${H}/5`, "missing upload id"],
    [`uploads/u/${H}/5`, "missing blobs keyword"],
    [`uploads/u/blobs/${H}`, "missing size"],
    [`uploads/u/compressed-blobs/brotli/${H}/5`, "unsupported compressor"],
    [`x/../uploads/u/blobs/${H}/5`, "dot-dot instance"],
    [`operations/uploads/u/blobs/${H}/5`, "reserved instance"],
    [`uploads/u/blobs/${H}/abc`, "non-numeric size"],
  ])("rejects %j (%s)", (name) => {
    const err = invalid(() => parseWriteResourceName(name, SHA));
    expect(err.message).toContain("expected {instance/}uploads/{uuid}/blobs/");
  });
});

describe("instance names and digest functions", () => {
  test("valid instance names pass unchanged", () => {
    for (const name of ["", "main", "a/b/c", "team-1/x_y.z", "with:colon"]) expect(parseInstanceName(name)).toBe(name);
  });

  test.each(["..", ".", "a/..", "a//b", "/a", "a/", "blobs", "x/uploads", "compressed-blobs", "actionResults", "a b", "\u0000"])(
    "instance name %j is INVALID_ARGUMENT",
    (name) => {
      invalid(() => parseInstanceName(name));
    },
  );

  test("a request's digest_function wins over the instance default; UNKNOWN means the default", () => {
    expect(requestDigestFn(BUCK2_BLAKE3, "buck2/b3", DigestFunction_Value.UNKNOWN)).toBe("blake3");
    expect(requestDigestFn(BUCK2_BLAKE3, "buck2/b3", DigestFunction_Value.SHA256)).toBe("sha256");
    expect(requestDigestFn(SHA, "", DigestFunction_Value.BLAKE3)).toBe("blake3");
    invalid(() => requestDigestFn(SHA, "", DigestFunction_Value.SHA1));
  });

  test("instance overrides are own properties only", () => {
    expect(instanceDefaultFn(SHA, "constructor")).toBe("sha256");
    expect(instanceDefaultFn(SHA, "__proto__")).toBe("sha256");
  });
});
