import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readdir } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode } from "../../src/errors";
import {
  Compressor_Value,
  DigestFunction_Value,
  type Digest as WireDigest,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { WriteRequest, type WriteResponse } from "../../src/proto/google/bytestream/bytestream";
import { openStorage, type Storage } from "../../src/storage/open-storage";
import { grpc, rpcError } from "../support/grpc-client";
import { type TestBlob, type TestServer, blob, bytes, startTestServer } from "./harness";
import { waitFor } from "./round-trips";

const H = "b".repeat(64);

/**
 * Clients that lie, break off or send garbage (reliability targets I-1, I-2,
 * H-3, H-4). Each case asserts the gRPC code, that nothing became visible, and
 * (after each test) that the server still answers. Runs against the production
 * stack so leaked temp files would show.
 */
describe("hostile clients", () => {
  let s: TestServer;
  let storage: Storage;
  let dataDir: string;
  /** Digests that must never become present. */
  const forbidden: WireDigest[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "lre-grpc-hostile-"));
    storage = await openStorage({ dataDir, maxBytes: 1024 * 1024 * 1024 });
    s = await startTestServer({ cas: storage.cas, ac: storage.ac, uploadIdleMs: 300 });
  });
  afterAll(async () => {
    await s.stop();
    await storage.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  afterEach(async () => {
    const caps = await s.clients.getCapabilities({});
    expect(caps.cacheCapabilities?.maxBatchTotalSizeBytes).toBe(4_000_000);
    if (forbidden.length > 0) {
      const r = await s.clients.findMissingBlobs({ blobDigests: forbidden });
      expect(r.missingBlobDigests).toEqual(forbidden);
    }
  });

  const poisoned = (b: TestBlob) => {
    forbidden.push(b.wire);
    return b;
  };
  const code = async (p: Promise<unknown>) => (await rpcError(p)).code;

  describe("bytes that do not match their digest", () => {
    test("BatchUpdate: wrong hash, one byte more, one byte less are per-blob INVALID_ARGUMENT; honest neighbours succeed", async () => {
      const honest = blob("an honest blob");
      const wrongHash = poisoned(blob("claimed content"));
      const plusOne = poisoned(blob("plus one"));
      const minusOne = poisoned(blob("minus one"));
      const r = await s.clients.batchUpdateBlobs({
        requests: [
          { digest: honest.wire, data: honest.data },
          { digest: wrongHash.wire, data: Buffer.from("other content!!") },
          { digest: plusOne.wire, data: Buffer.concat([plusOne.data, Buffer.from("x")]) },
          { digest: minusOne.wire, data: minusOne.data.subarray(1) },
        ],
      });
      expect(r.responses.map((x) => x.status?.code)).toEqual([
        GrpcCode.OK,
        GrpcCode.INVALID_ARGUMENT,
        GrpcCode.INVALID_ARGUMENT,
        GrpcCode.INVALID_ARGUMENT,
      ]);
      expect(r.responses.map((x) => x.digest)).toEqual([honest.wire, wrongHash.wire, plusOne.wire, minusOne.wire]);
    });

    test("ByteStream: wrong hash, +1 byte, -1 byte, and a size differing from the resource name", async () => {
      const b = poisoned(blob(bytes(100_000, 61)));
      const name = () => formatWriteResourceName("", crypto.randomUUID(), b.digest);
      const flipped = Buffer.from(b.data);
      flipped[50_000] = (flipped[50_000] ?? 0) ^ 1;
      expect(await code(s.clients.writeBlob(name(), flipped, { chunkBytes: 30_000 }))).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await code(s.clients.writeBlob(name(), Buffer.concat([b.data, Buffer.from([0])])))).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await code(s.clients.writeBlob(name(), b.data.subarray(0, -1)))).toBe(grpc.status.INVALID_ARGUMENT);
      const lying = formatWriteResourceName("", crypto.randomUUID(), { ...b.digest, sizeBytes: 99_999 });
      expect(await code(s.clients.writeBlob(lying, b.data))).toBe(grpc.status.INVALID_ARGUMENT);
      forbidden.push({ hash: b.digest.hash, sizeBytes: 99_999 });
    });

    test("compressed-blobs: zstd of other bytes, corrupt zstd, truncated zstd and a zip bomb", async () => {
      const b = poisoned(blob(bytes(200_000, 71)));
      const name = () => formatWriteResourceName("", crypto.randomUUID(), b.digest, "zstd");
      const other = zlib.zstdCompressSync(bytes(200_000, 72));
      const good = zlib.zstdCompressSync(b.data);
      const corrupt = Buffer.from(good);
      corrupt.fill(0x55, 10, 40);
      const bomb = zlib.zstdCompressSync(Buffer.alloc(50_000_000));
      for (const payload of [other, corrupt, good.subarray(0, good.byteLength - 20), Buffer.from("not zstd at all"), bomb]) {
        expect(await code(s.clients.writeBlob(name(), payload, { chunkBytes: 4096 }))).toBe(grpc.status.INVALID_ARGUMENT);
      }
      const batch = await s.clients.batchUpdateBlobs({
        requests: [
          { digest: b.wire, data: other, compressor: Compressor_Value.ZSTD },
          { digest: b.wire, data: corrupt, compressor: Compressor_Value.ZSTD },
          { digest: b.wire, data: good, compressor: Compressor_Value.BROTLI },
        ],
      });
      expect(batch.responses.map((r) => r.status?.code)).toEqual([
        GrpcCode.INVALID_ARGUMENT,
        GrpcCode.INVALID_ARGUMENT,
        GrpcCode.INVALID_ARGUMENT,
      ]);
    });

    test("racing Writes of one digest with distinct upload ids, half of them corrupt", async () => {
      const b = blob(bytes(256 * 1024, 81));
      const corrupt = Buffer.from(b.data);
      corrupt[1000] = (corrupt[1000] ?? 0) ^ 0xff;
      const writers = Array.from({ length: 16 }, (_, i) => {
        const honest = i % 2 === 0;
        const data = honest ? b.data : corrupt;
        const name = formatWriteResourceName("", `race-${i}`, b.digest);
        let call!: grpc.ClientWritableStream<WriteRequest>;
        const done = new Promise<WriteResponse | grpc.ServiceError>((resolve) => {
          call = s.clients.bytestream.write((err, res) => resolve(err ?? res));
        });
        // Every writer is past the existence check before any of them finishes.
        call.write(WriteRequest.fromPartial({ resourceName: name, writeOffset: 0, data: data.subarray(0, 1024) }));
        return { honest, data, name, call, done };
      });
      await waitFor(async () => {
        const st = await Promise.all(writers.map((w) => s.clients.queryWriteStatus(w.name)));
        return st.every((x) => x.committedSize === 1024);
      });
      for (const w of writers) {
        w.call.write(WriteRequest.fromPartial({ writeOffset: 1024, data: w.data.subarray(1024), finishWrite: true }));
        w.call.end();
      }
      const results = await Promise.all(writers.map((w) => w.done));
      results.forEach((r, i) => {
        if (writers[i]?.honest) expect(r).toEqual({ committedSize: b.data.byteLength });
        else expect((r as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
      });
      const stored = await s.clients.read({ resourceName: formatReadResourceName("", b.digest) });
      expect(stored.data.equals(b.data)).toBe(true);
    });
  });

  describe("batch limits", () => {
    test("a batch at exactly the advertised 4,000,000 bytes fits; one byte more is INVALID_ARGUMENT and stores nothing", async () => {
      const four = Array.from({ length: 4 }, (_, i) => blob(bytes(1_000_000, 90 + i)));
      const ok = await s.clients.batchUpdateBlobs({ requests: four.map((b) => ({ digest: b.wire, data: b.data })) });
      expect(ok.responses.every((r) => r.status?.code === GrpcCode.OK)).toBe(true);
      const read = await s.clients.batchReadBlobs({ digests: four.map((b) => b.wire) });
      expect(read.responses.every((r) => r.status?.code === GrpcCode.OK)).toBe(true);

      const over = [...Array.from({ length: 3 }, (_, i) => poisoned(blob(bytes(1_000_000, 95 + i)))), poisoned(blob(bytes(1_000_001, 99)))];
      expect(await code(s.clients.batchUpdateBlobs({ requests: over.map((b) => ({ digest: b.wire, data: b.data })) }))).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
      // Lying about sizes does not get around the limit either.
      const liar = over.map((b) => ({ digest: { ...b.wire, sizeBytes: 10 }, data: b.data }));
      expect(await code(s.clients.batchUpdateBlobs({ requests: liar }))).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await code(s.clients.batchReadBlobs({ digests: [...four, over[0] as TestBlob].map((b) => b.wire) }))).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
    });
  });

  describe("malformed requests", () => {
    const badDigests: WireDigest[] = [
      { hash: "xyz", sizeBytes: 1 },
      { hash: H.toUpperCase(), sizeBytes: 1 },
      { hash: H.slice(1), sizeBytes: 1 },
      { hash: H, sizeBytes: -5 },
      { hash: "", sizeBytes: 0 },
    ];

    test("FindMissingBlobs and GetActionResult reject malformed digests with INVALID_ARGUMENT", async () => {
      for (const d of badDigests) {
        expect(await code(s.clients.findMissingBlobs({ blobDigests: [blob("fine").wire, d] }))).toBe(grpc.status.INVALID_ARGUMENT);
        expect(await code(s.clients.getActionResult({ actionDigest: d }))).toBe(grpc.status.INVALID_ARGUMENT);
      }
      expect(await code(s.clients.getActionResult({}))).toBe(grpc.status.INVALID_ARGUMENT);
    });

    test("BatchReadBlobs answers malformed digests per blob and still serves the good ones", async () => {
      const good = blob("good for batch read");
      await s.clients.batchUpdateBlobs({ requests: [{ digest: good.wire, data: good.data }] });
      const r = await s.clients.batchReadBlobs({ digests: [good.wire, ...badDigests, blob("never stored").wire] });
      expect(r.responses.map((x) => x.status?.code)).toEqual([
        GrpcCode.OK,
        ...badDigests.map(() => GrpcCode.INVALID_ARGUMENT),
        GrpcCode.NOT_FOUND,
      ]);
      expect(Buffer.from(r.responses[0]?.data ?? []).toString()).toBe("good for batch read");
    });

    test("unsupported digest functions and bad instance names are INVALID_ARGUMENT on every RPC", async () => {
      const d = blob("x").wire;
      expect(await code(s.clients.findMissingBlobs({ blobDigests: [d], digestFunction: DigestFunction_Value.SHA1 }))).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
      for (const instanceName of ["..", "a/../b", "x//y", "uploads", "a/blobs"]) {
        expect(await code(s.clients.findMissingBlobs({ instanceName, blobDigests: [d] }))).toBe(grpc.status.INVALID_ARGUMENT);
        expect(await code(s.clients.batchReadBlobs({ instanceName, digests: [d] }))).toBe(grpc.status.INVALID_ARGUMENT);
        expect(await code(s.clients.getActionResult({ instanceName, actionDigest: d }))).toBe(grpc.status.INVALID_ARGUMENT);
        expect(
          await code(s.clients.updateActionResult({ instanceName, actionDigest: d, actionResult: { exitCode: 0 } })),
        ).toBe(grpc.status.INVALID_ARGUMENT);
      }
    });

    test("bad resource names for Read, Write and QueryWriteStatus", async () => {
      const d = blob("resource names").digest;
      const badReads = [
        "",
        "blobs",
        `blobs/${d.hash}`,
        `blobs/${d.hash}/14/extra`,
        `blobs/${d.hash}/-1`,
        `blobs/${d.hash}/1e3`,
        `blobs/${d.hash.slice(2)}/14`,
        `blobs/sha1/${d.hash}/14`,
        `compressed-blobs/gzip/${d.hash}/14`,
        `compressed-blobs/zstd/${d.hash}`,
        `../blobs/${d.hash}/14`,
        `a//blobs/${d.hash}/14`,
        `/blobs/${d.hash}/14`,
        `uploads/u/blobs/${d.hash}/14`,
        `operations/x/blobs/${d.hash}/14`,
      ];
      for (const resourceName of badReads) {
        const err = await rpcError(s.clients.read({ resourceName }));
        expect([resourceName, err.code]).toEqual([resourceName, grpc.status.INVALID_ARGUMENT]);
        expect(err.details).toContain("expected {instance/}blobs/");
      }
      const badWrites = [
        `blobs/${d.hash}/14`,
        `uploads/blobs/${d.hash}/14`,
        `uploads/u/${d.hash}/14`,
        `uploads/u/compressed-blobs/${d.hash}/14`,
        `x/../uploads/u/blobs/${d.hash}/14`,
        `uploads/u/blobs/${d.hash}/fourteen`,
      ];
      for (const resourceName of badWrites) {
        expect(await code(s.clients.write([{ resourceName, data: Buffer.from("resource names"), finishWrite: true }]))).toBe(
          grpc.status.INVALID_ARGUMENT,
        );
        expect(await code(s.clients.queryWriteStatus(resourceName))).toBe(grpc.status.INVALID_ARGUMENT);
      }
      forbidden.push({ hash: d.hash, sizeBytes: 14 });
    });

    test("ByteStream offsets and limits outside the rules", async () => {
      const b = blob(bytes(5000, 101));
      await s.clients.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] });
      const read = formatReadResourceName("", b.digest);
      expect(await code(s.clients.read({ resourceName: read, readOffset: 5001 }))).toBe(grpc.status.OUT_OF_RANGE);
      expect(await code(s.clients.read({ resourceName: read, readOffset: -1 }))).toBe(grpc.status.OUT_OF_RANGE);
      expect(await code(s.clients.read({ resourceName: read, readLimit: -1 }))).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await code(s.clients.read({ resourceName: formatReadResourceName("", b.digest, "zstd"), readLimit: 10 }))).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
      expect(await code(s.clients.read({ resourceName: formatReadResourceName("", blob("absent").digest) }))).toBe(
        grpc.status.NOT_FOUND,
      );

      const w = poisoned(blob(bytes(3000, 102)));
      const name = () => formatWriteResourceName("", crypto.randomUUID(), w.digest);
      // First offset beyond what the server holds.
      expect(await code(s.clients.write([{ resourceName: name(), writeOffset: 10, data: w.data.subarray(10), finishWrite: true }]))).toBe(
        grpc.status.INVALID_ARGUMENT,
      );
      // A gap in the middle of the stream.
      expect(
        await code(
          s.clients.write([
            { resourceName: name(), writeOffset: 0, data: w.data.subarray(0, 1000) },
            { writeOffset: 1500, data: w.data.subarray(1500), finishWrite: true },
          ]),
        ),
      ).toBe(grpc.status.INVALID_ARGUMENT);
      // Data after finish_write.
      expect(
        await code(
          s.clients.write([
            { resourceName: name(), writeOffset: 0, data: w.data.subarray(0, 1000), finishWrite: true },
            { writeOffset: 1000, data: w.data.subarray(1000) },
          ]),
        ),
      ).toBe(grpc.status.INVALID_ARGUMENT);
      // The resource name changing mid-stream.
      expect(
        await code(
          s.clients.write([
            { resourceName: name(), writeOffset: 0, data: w.data.subarray(0, 1000) },
            { resourceName: name(), writeOffset: 1000, data: w.data.subarray(1000), finishWrite: true },
          ]),
        ),
      ).toBe(grpc.status.INVALID_ARGUMENT);
      // A stream with no requests at all.
      expect(await code(s.clients.write([]))).toBe(grpc.status.INVALID_ARGUMENT);
    });

    test("UpdateActionResult with absolute or escaping paths is INVALID_ARGUMENT and stores nothing", async () => {
      const action = blob("hostile action");
      const file = blob("some output");
      for (const path of ["/etc/passwd", "../escape", "a/../../b", "a//b", "./a", ""]) {
        const err = await rpcError(
          s.clients.updateActionResult({ actionDigest: action.wire, actionResult: { outputFiles: [{ path, digest: file.wire }] } }),
        );
        expect([path, err.code]).toEqual([path, grpc.status.INVALID_ARGUMENT]);
      }
      const symlink = await rpcError(
        s.clients.updateActionResult({ actionDigest: action.wire, actionResult: { outputSymlinks: [{ path: "/abs", target: "x" }] } }),
      );
      expect(symlink.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await code(s.clients.getActionResult({ actionDigest: action.wire }))).toBe(grpc.status.NOT_FOUND);
    });
  });

  describe("broken streams", () => {
    test("a truncated stream (no finish_write) and a cancelled upload leave nothing visible, then expire without temp files", async () => {
      const b = poisoned(blob(bytes(2 * 1024 * 1024, 111)));
      const truncated = formatWriteResourceName("", crypto.randomUUID(), b.digest);
      expect(
        await code(s.clients.write([{ resourceName: truncated, writeOffset: 0, data: b.data.subarray(0, 1024 * 1024) }])),
      ).toBe(grpc.status.INVALID_ARGUMENT);

      const cancelled = formatWriteResourceName("", crypto.randomUUID(), b.digest, "zstd");
      const packed = zlib.zstdCompressSync(b.data);
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        const call = s.clients.bytestream.write((e) => resolve(e));
        call.write(WriteRequest.fromPartial({ resourceName: cancelled, writeOffset: 0, data: packed.subarray(0, packed.byteLength >> 1) }));
        void waitFor(async () => (await s.clients.queryWriteStatus(cancelled)).committedSize > 0).then(() => call.cancel());
      });
      expect(err?.code).toBe(grpc.status.CANCELLED);

      // While the sessions wait for a resume the blob is still missing.
      expect((await s.clients.findMissingBlobs({ blobDigests: [b.wire] })).missingBlobDigests).toEqual([b.wire]);
      // After the idle time (300 ms here) both sessions are gone and so are their temp files.
      await waitFor(async () => {
        const st = await Promise.all([truncated, cancelled].map((n) => s.clients.queryWriteStatus(n)));
        return st.every((x) => x.committedSize === 0);
      });
      await waitFor(async () => (await readdir(join(dataDir, "tmp"))).length === 0);
    });

    test("a client that cancels mid-Read does not disturb the server", async () => {
      const b = blob(bytes(8 * 1024 * 1024, 121));
      await s.clients.writeBlob(formatWriteResourceName("", crypto.randomUUID(), b.digest), b.data, { chunkBytes: 1024 * 1024 });
      const stream = s.clients.bytestream.read({ resourceName: formatReadResourceName("", b.digest), readOffset: 0, readLimit: 0 });
      const err = await new Promise<grpc.ServiceError>((resolve) => {
        stream.once("data", () => stream.cancel());
        stream.on("error", resolve);
      });
      expect(err.code).toBe(grpc.status.CANCELLED);
      const again = await s.clients.read({ resourceName: formatReadResourceName("", b.digest) });
      expect(again.data.equals(b.data)).toBe(true);
    });
  });
});
