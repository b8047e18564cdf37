import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as zlib from "node:zlib";
import type { ActionCache } from "../../src/ac/action-cache";
import type { BlobStore } from "../../src/cas/blob-store";
import { EMPTY_HASH, type DigestFn } from "../../src/digest/digest";
import { formatReadResourceName, formatWriteResourceName } from "../../src/digest/resource-name";
import { GrpcCode } from "../../src/errors";
import { READ_CHUNK_BYTES } from "../../src/grpc/bytestream-service";
import {
  Compressor_Value,
  Directory,
  DigestFunction_Value,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { WriteRequest } from "../../src/proto/google/bytestream/bytestream";
import { grpc, rpcError } from "../support/grpc-client";
import { type TestServer, type Transport, blob, bytes, startTestServer } from "./harness";

export interface StoreFactory {
  /** Fresh stores for one server; `cleanup` runs after the server stopped. */
  (): Promise<{ cas: BlobStore; ac: ActionCache; cleanup(): Promise<void> }>;
}

const FNS: readonly DigestFn[] = ["sha256", "blake3"];
const wireFn = (fn: DigestFn) => (fn === "sha256" ? DigestFunction_Value.SHA256 : DigestFunction_Value.BLAKE3);

/**
 * The CAS, ByteStream and ActionCache exchanges every storage stack must
 * support, run over a real socket. Called once per store implementation and
 * transport.
 */
export function describeRoundTrips(storeName: string, transport: Transport, makeStores: StoreFactory): void {
  describe(`round trips over ${transport} (${storeName})`, () => {
    let s: TestServer;
    let stores: Awaited<ReturnType<StoreFactory>>;

    beforeAll(async () => {
      stores = await makeStores();
      s = await startTestServer({ transport, cas: stores.cas, ac: stores.ac, digests: { defaultDigestFn: "sha256" } });
    });
    afterAll(async () => {
      await s.stop();
      await stores.cleanup();
    });

    for (const fn of FNS) {
      test(`${fn}: FindMissing, BatchUpdate, BatchRead`, async () => {
        const blobs = [blob(`one ${fn}`, fn), blob(`two ${fn}`, fn), blob(bytes(50_000, 7), fn)];
        const digestFunction = wireFn(fn);
        const before = await s.clients.findMissingBlobs({ blobDigests: blobs.map((b) => b.wire), digestFunction });
        expect(before.missingBlobDigests).toEqual(blobs.map((b) => b.wire));

        const up = await s.clients.batchUpdateBlobs({
          digestFunction,
          requests: blobs.map((b) => ({ digest: b.wire, data: b.data })),
        });
        expect(up.responses.map((r) => [r.digest, r.status?.code])).toEqual(blobs.map((b) => [b.wire, GrpcCode.OK]));

        const after = await s.clients.findMissingBlobs({ blobDigests: blobs.map((b) => b.wire), digestFunction });
        expect(after.missingBlobDigests).toEqual([]);

        const read = await s.clients.batchReadBlobs({ digests: blobs.map((b) => b.wire), digestFunction });
        expect(read.responses.map((r) => ({ code: r.status?.code, compressor: r.compressor, data: r.data.toString("hex") }))).toEqual(
          blobs.map((b) => ({ code: GrpcCode.OK as number, compressor: Compressor_Value.IDENTITY, data: b.data.toString("hex") })),
        );
      });

      test(`${fn}: ByteStream write in chunks, read whole, from an offset and with a limit`, async () => {
        // Larger than gRPC's default 4 MiB message limit, so both directions must stream.
        const b = blob(bytes(5 * 1024 * 1024 + 123, fn === "sha256" ? 3 : 4), fn);
        const w = await s.clients.writeBlob(formatWriteResourceName("", crypto.randomUUID(), b.digest), b.data, {
          chunkBytes: 256 * 1024,
        });
        expect(w.committedSize).toBe(b.data.byteLength);

        const whole = await s.clients.read({ resourceName: formatReadResourceName("", b.digest) });
        expect(whole.data.equals(b.data)).toBe(true);
        expect(whole.messages).toBeGreaterThanOrEqual(Math.ceil(b.data.byteLength / READ_CHUNK_BYTES));

        const tail = await s.clients.read({ resourceName: formatReadResourceName("", b.digest), readOffset: 5_000_000 });
        expect(tail.data.equals(b.data.subarray(5_000_000))).toBe(true);

        const slice = await s.clients.read({
          resourceName: formatReadResourceName("", b.digest),
          readOffset: 1000,
          readLimit: 2_000_000,
        });
        expect(slice.data.equals(b.data.subarray(1000, 2_001_000))).toBe(true);

        const atEnd = await s.clients.read({ resourceName: formatReadResourceName("", b.digest), readOffset: b.data.byteLength });
        expect(atEnd.data.byteLength).toBe(0);
      });

      test(`${fn}: zstd write through compressed-blobs, then read plain and compressed`, async () => {
        const b = blob(bytes(300_000, 11), fn);
        const packed = zlib.zstdCompressSync(b.data);
        const name = formatWriteResourceName("", crypto.randomUUID(), b.digest, "zstd");
        const w = await s.clients.writeBlob(name, packed, { chunkBytes: 1000 });
        // Buck2 and Bazel accept the compressed byte count (or -1) for a finished compressed upload.
        expect(w.committedSize).toBe(packed.byteLength);

        const plain = await s.clients.read({ resourceName: formatReadResourceName("", b.digest) });
        expect(plain.data.equals(b.data)).toBe(true);

        const compressed = await s.clients.read({ resourceName: formatReadResourceName("", b.digest, "zstd") });
        expect(zlib.zstdDecompressSync(compressed.data).equals(b.data)).toBe(true);

        // read_offset counts uncompressed bytes.
        const fromOffset = await s.clients.read({ resourceName: formatReadResourceName("", b.digest, "zstd"), readOffset: 100_000 });
        expect(zlib.zstdDecompressSync(fromOffset.data).equals(b.data.subarray(100_000))).toBe(true);
      });
    }

    test("the empty blob is always present and readable in every form", async () => {
      for (const fn of FNS) {
        const empty = { hash: EMPTY_HASH[fn], sizeBytes: 0 };
        const missing = await s.clients.findMissingBlobs({ blobDigests: [empty], digestFunction: wireFn(fn) });
        expect(missing.missingBlobDigests).toEqual([]);
        const batch = await s.clients.batchReadBlobs({ digests: [empty], digestFunction: wireFn(fn) });
        expect(batch.responses[0]?.status?.code).toBe(GrpcCode.OK);
        expect(batch.responses[0]?.data.byteLength).toBe(0);
        const d = { fn, hash: EMPTY_HASH[fn], sizeBytes: 0 };
        expect((await s.clients.read({ resourceName: formatReadResourceName("", d) })).data.byteLength).toBe(0);
        const z = await s.clients.read({ resourceName: formatReadResourceName("", d, "zstd") });
        expect(zlib.zstdDecompressSync(z.data).byteLength).toBe(0);
        const w = await s.clients.writeBlob(formatWriteResourceName("", "e", d), Buffer.alloc(0));
        expect(w.committedSize).toBe(0);
      }
    });

    test("BatchRead answers ZSTD when the client accepts it and it saves bytes", async () => {
      const big = blob(Buffer.alloc(100_000, "z"));
      const tiny = blob("t");
      await s.clients.batchUpdateBlobs({ requests: [big, tiny].map((b) => ({ digest: b.wire, data: b.data })) });
      const read = await s.clients.batchReadBlobs({
        digests: [big.wire, tiny.wire],
        acceptableCompressors: [Compressor_Value.ZSTD],
      });
      const [rb, rt] = read.responses;
      expect(rb?.compressor).toBe(Compressor_Value.ZSTD);
      expect(zlib.zstdDecompressSync(rb?.data ?? Buffer.alloc(0)).equals(big.data)).toBe(true);
      expect(rt?.compressor).toBe(Compressor_Value.IDENTITY);
      expect(Buffer.from(rt?.data ?? []).toString()).toBe("t");
    });

    test("BatchUpdate accepts zstd-compressed blobs and stores them uncompressed", async () => {
      const b = blob(bytes(40_000, 21));
      const up = await s.clients.batchUpdateBlobs({
        requests: [{ digest: b.wire, data: zlib.zstdCompressSync(b.data), compressor: Compressor_Value.ZSTD }],
      });
      expect(up.responses[0]?.status?.code).toBe(GrpcCode.OK);
      const read = await s.clients.read({ resourceName: formatReadResourceName("", b.digest) });
      expect(read.data.equals(b.data)).toBe(true);
    });

    test("an interrupted upload resumes from the offset QueryWriteStatus reports", async () => {
      const b = blob(bytes(600_000, 31));
      const name = formatWriteResourceName("main", crypto.randomUUID(), b.digest);
      expect(await s.clients.queryWriteStatus(name)).toEqual({ committedSize: 0, complete: false });

      // First attempt: 200,000 bytes, then the connection breaks (the client cancels).
      const failed = new Promise<grpc.ServiceError | null>((resolve) => {
        const call = s.clients.bytestream.write((err) => resolve(err));
        call.write(WriteRequest.fromPartial({ resourceName: name, writeOffset: 0, data: b.data.subarray(0, 100_000) }));
        call.write(WriteRequest.fromPartial({ writeOffset: 100_000, data: b.data.subarray(100_000, 200_000) }));
        void waitFor(async () => (await s.clients.queryWriteStatus(name)).committedSize === 200_000).then(() => call.cancel());
      });
      expect((await failed)?.code).toBe(grpc.status.CANCELLED);

      const status = await s.clients.queryWriteStatus(name);
      expect(status).toEqual({ committedSize: 200_000, complete: false });
      expect((await s.clients.findMissingBlobs({ blobDigests: [b.wire] })).missingBlobDigests).toEqual([b.wire]);

      // Second attempt continues where the server says the first stopped (Bazel 4.2.3's behaviour).
      const w = await s.clients.writeBlob(name, b.data, { offset: status.committedSize, chunkBytes: 150_000 });
      expect(w.committedSize).toBe(b.data.byteLength);
      expect(await s.clients.queryWriteStatus(name)).toEqual({ committedSize: b.data.byteLength, complete: true });
      const read = await s.clients.read({ resourceName: formatReadResourceName("main", b.digest) });
      expect(read.data.equals(b.data)).toBe(true);
    });

    test("a stream that ends without finish_write keeps its bytes for a resume, and offset 0 restarts", async () => {
      const b = blob(bytes(10_000, 41));
      const name = formatWriteResourceName("", crypto.randomUUID(), b.digest);
      const err = await rpcError(s.clients.write([{ resourceName: name, writeOffset: 0, data: b.data.subarray(0, 4000) }]));
      expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(err.details).toContain("without finish_write");
      expect((await s.clients.queryWriteStatus(name)).committedSize).toBe(4000);

      // A client that lost track restarts at 0; the server discards the partial bytes.
      const w = await s.clients.writeBlob(name, b.data, { chunkBytes: 3000 });
      expect(w.committedSize).toBe(10_000);
    });

    test("a write of a blob that is already stored ends at once with committed_size size (plain) or -1 (zstd)", async () => {
      const b = blob(bytes(20_000, 51));
      await s.clients.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] });
      const plain = await s.clients.write([
        { resourceName: formatWriteResourceName("", crypto.randomUUID(), b.digest), data: b.data.subarray(0, 10), writeOffset: 0 },
      ]);
      expect(plain.committedSize).toBe(20_000);
      const packed = await s.clients.writeBlob(
        formatWriteResourceName("", crypto.randomUUID(), b.digest, "zstd"),
        zlib.zstdCompressSync(b.data),
        { chunkBytes: 100 },
      );
      expect(packed.committedSize).toBe(-1);
    });

    test("GetTree walks every distinct directory breadth-first, in pages", async () => {
      const put = async (d: Directory) => {
        const b = blob(Buffer.from(Directory.encode(d).finish()));
        await s.clients.batchUpdateBlobs({ requests: [{ digest: b.wire, data: b.data }] });
        return b;
      };
      const file = blob("leaf file");
      const dirOf = (entries: Record<string, { wire: { hash: string; sizeBytes: number } }>) =>
        Directory.fromPartial({
          files: [{ name: "f", digest: file.wire }],
          directories: Object.entries(entries)
            .sort(([x], [y]) => (x < y ? -1 : 1))
            .map(([name, b]) => ({ name, digest: b.wire })),
        });
      const d = await put(dirOf({}));
      const c = await put(dirOf({ d }));
      const a = await put(dirOf({ c }));
      const b2 = await put(dirOf({ c, "c-again": c }));
      const root = await put(dirOf({ a, b: b2 }));

      const all = await s.clients.getTree({ rootDigest: root.wire });
      const names = all.flatMap((p) => p.directories.map((x) => x.directories.map((n) => n.name).join(",")));
      expect(names).toEqual(["a,b", "c", "c,c-again", "d", ""]);
      expect(all.at(-1)?.nextPageToken).toBe("");

      const pages = await s.clients.getTree({ rootDigest: root.wire, pageSize: 2 });
      expect(pages.map((p) => p.directories.length)).toEqual([2, 2, 1]);
      const resumed = await s.clients.getTree({ rootDigest: root.wire, pageSize: 2, pageToken: pages[0]?.nextPageToken ?? "" });
      expect(resumed.flatMap((p) => p.directories)).toEqual(pages.slice(1).flatMap((p) => p.directories));

      const missing = await rpcError(s.clients.getTree({ rootDigest: blob("no such dir").wire }));
      expect(missing.code).toBe(grpc.status.NOT_FOUND);
    });

    test("action results round-trip per instance, and one instance never sees another's", async () => {
      const action = blob("action a");
      const stdout = blob("hello from stdout");
      const out = blob("output file bytes");
      await s.clients.batchUpdateBlobs({ requests: [stdout, out].map((b) => ({ digest: b.wire, data: b.data })) });
      const result = {
        exitCode: 0,
        stdoutDigest: stdout.wire,
        outputFiles: [{ path: "bin/out", digest: out.wire, isExecutable: true }],
      };
      const stored = await s.clients.updateActionResult({ instanceName: "team/a", actionDigest: action.wire, actionResult: result });
      expect(stored.outputFiles[0]?.path).toBe("bin/out");

      const hit = await s.clients.getActionResult({ instanceName: "team/a", actionDigest: action.wire });
      expect(hit.outputFiles[0]?.digest).toEqual(out.wire);
      expect(hit.stdoutRaw.byteLength).toBe(0);

      const inlined = await s.clients.getActionResult({
        instanceName: "team/a",
        actionDigest: action.wire,
        inlineStdout: true,
        inlineOutputFiles: ["bin/out"],
      });
      expect(Buffer.from(inlined.stdoutRaw).toString()).toBe("hello from stdout");
      expect(Buffer.from(inlined.outputFiles[0]?.contents ?? []).toString()).toBe("output file bytes");

      for (const other of ["", "team/b", "team"]) {
        const miss = await rpcError(s.clients.getActionResult({ instanceName: other, actionDigest: action.wire }));
        expect(miss.code).toBe(grpc.status.NOT_FOUND);
      }
    });

    test("a BLAKE3 action result is keyed by its function", async () => {
      const action = blob("blake3 action", "blake3");
      await s.clients.updateActionResult({
        actionDigest: action.wire,
        digestFunction: DigestFunction_Value.BLAKE3,
        actionResult: { exitCode: 3 },
      });
      const hit = await s.clients.getActionResult({ actionDigest: action.wire, digestFunction: DigestFunction_Value.BLAKE3 });
      expect(hit.exitCode).toBe(3);
      const asSha = await rpcError(s.clients.getActionResult({ actionDigest: action.wire }));
      expect(asSha.code).toBe(grpc.status.NOT_FOUND);
    });
  });
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error("condition not reached in time");
    await Bun.sleep(5);
  }
}
