import { describe, expect, test } from "bun:test";
import { EMPTY_HASH, uniqueNonEmptyDigests } from "../../src/digest/digest";
import { GrpcCode, isRpcError } from "../../src/errors";

const A = "a".repeat(64);
const B = "b".repeat(64);

describe("uniqueNonEmptyDigests (FindMissingBlobs request lists)", () => {
  test("drops the empty blob and repeats, keeping first-seen order", () => {
    const got = uniqueNonEmptyDigests("sha256", [
      { hash: B, sizeBytes: 2 },
      { hash: EMPTY_HASH.sha256, sizeBytes: 0 },
      { hash: A, sizeBytes: 1 },
      { hash: B, sizeBytes: 2 },
    ], "blob_digests");
    expect(got).toEqual([
      { fn: "sha256", hash: B, sizeBytes: 2 },
      { fn: "sha256", hash: A, sizeBytes: 1 },
    ]);
  });

  test("one hash with two sizes is two digests, each listed once", () => {
    const got = uniqueNonEmptyDigests("blake3", [
      { hash: A, sizeBytes: 1 },
      { hash: A, sizeBytes: 7 },
      { hash: A, sizeBytes: 7 },
      { hash: A, sizeBytes: 1 },
    ], "blob_digests");
    expect(got).toEqual([
      { fn: "blake3", hash: A, sizeBytes: 1 },
      { fn: "blake3", hash: A, sizeBytes: 7 },
    ]);
  });

  test("the SHA-256 empty hash is an ordinary blob under BLAKE3", () => {
    expect(uniqueNonEmptyDigests("blake3", [{ hash: EMPTY_HASH.sha256, sizeBytes: 0 }], "blob_digests")).toHaveLength(1);
    expect(uniqueNonEmptyDigests("blake3", [{ hash: EMPTY_HASH.blake3, sizeBytes: 0 }], "blob_digests")).toHaveLength(0);
  });

  test("a bad entry is INVALID_ARGUMENT naming its index", () => {
    for (const bad of [{ hash: "A".repeat(64), sizeBytes: 1 }, { hash: A.slice(1), sizeBytes: 1 }, { hash: A, sizeBytes: -1 }]) {
      try {
        uniqueNonEmptyDigests("sha256", [{ hash: B, sizeBytes: 1 }, bad], "blob_digests");
        throw new Error("accepted a bad digest");
      } catch (err) {
        expect(isRpcError(err) && err.code).toBe(GrpcCode.INVALID_ARGUMENT);
        expect((err as Error).message).toContain("blob_digests[1]");
      }
    }
  });
});
