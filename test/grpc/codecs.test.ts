/**
 * The hand-written wire codecs (bytestream-codec.ts, cas-codec.ts) produce and
 * accept exactly what the generated ones do, edge cases included: empty and
 * non-ASCII strings, sizes past 2^49 and 2^53, negative sizes, unknown fields.
 */
import { describe, expect, test } from "bun:test";
import { decodeWriteRequest, encodeReadResponse } from "../../src/grpc/bytestream-codec";
import { decodeFindMissingBlobsRequest, encodeFindMissingBlobsResponse } from "../../src/grpc/cas-codec";
import { FindMissingBlobsRequest, FindMissingBlobsResponse } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { ReadResponse, WriteRequest } from "../../src/proto/google/bytestream/bytestream";

const digests = [
  { hash: "a".repeat(64), sizeBytes: 5 },
  { hash: "", sizeBytes: 0 },
  { hash: "é", sizeBytes: -5 },
  { hash: "b".repeat(64), sizeBytes: 2 ** 40 + 3 },
  { hash: "c".repeat(64), sizeBytes: 2 ** 52 + 1 },
  { hash: "d".repeat(64), sizeBytes: 127 },
  { hash: "e".repeat(64), sizeBytes: 128 },
];

/** A length-delimited field 15 the schema does not know, as a newer client might send. */
const unknownField = Buffer.from([0x7a, 0x02, 0x68, 0x69]);

describe("FindMissingBlobs codecs", () => {
  test("decode matches the generated decoder", () => {
    const req = { instanceName: "main/ü", blobDigests: digests, digestFunction: 1 };
    const bytes = Buffer.concat([Buffer.from(FindMissingBlobsRequest.encode(req).finish()), unknownField]);
    expect(decodeFindMissingBlobsRequest(bytes)).toEqual(FindMissingBlobsRequest.decode(bytes));
    const empty = Buffer.alloc(0);
    expect(decodeFindMissingBlobsRequest(empty)).toEqual(FindMissingBlobsRequest.decode(empty));
  });

  test("a size beyond the safe integer range is rejected, as by the generated decoder", () => {
    // size_bytes = 2^63 - 1, encoded by hand.
    const digest = Buffer.from([0x0a, 0x01, 0x78, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    const huge = Buffer.concat([Buffer.from([0x12, digest.length]), digest]);
    expect(() => FindMissingBlobsRequest.decode(huge)).toThrow();
    expect(() => decodeFindMissingBlobsRequest(huge)).toThrow();
  });

  test("encode matches the generated encoder byte for byte", () => {
    for (const list of [digests, [], digests.slice(0, 1)]) {
      const res = { missingBlobDigests: list };
      expect(encodeFindMissingBlobsResponse(res).equals(Buffer.from(FindMissingBlobsResponse.encode(res).finish()))).toBe(true);
    }
  });
});

describe("ByteStream codecs", () => {
  test("WriteRequest decode matches the generated decoder", () => {
    for (const req of [
      { resourceName: "uploads/u/blobs/h/3", writeOffset: 0, finishWrite: true, data: Buffer.from("abc") },
      { resourceName: "", writeOffset: 2 ** 40 + 1, finishWrite: false, data: Buffer.alloc(70_000, 7) },
      { resourceName: "", writeOffset: -1, finishWrite: false, data: Buffer.alloc(0) },
    ]) {
      const bytes = Buffer.concat([Buffer.from(WriteRequest.encode(req).finish()), unknownField]);
      const ours = decodeWriteRequest(bytes);
      const theirs = WriteRequest.decode(bytes);
      expect({ ...ours, data: Buffer.from(ours.data) }).toEqual({ ...theirs, data: Buffer.from(theirs.data) });
      expect(Buffer.isBuffer(ours.data)).toBe(true);
    }
  });

  test("ReadResponse encode matches the generated encoder byte for byte", () => {
    for (const size of [0, 1, 127, 128, 16_383, 16_384, 1024 * 1024]) {
      const res = { data: Buffer.alloc(size, 3) };
      expect(encodeReadResponse(res).equals(Buffer.from(ReadResponse.encode(res).finish()))).toBe(true);
    }
  });
});
