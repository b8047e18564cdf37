import type * as grpc from "@grpc/grpc-js";
import type { BlobStore, BlobWriter } from "../cas/blob-store";
import { ZstdDecoder, zstdCompressStream } from "../compression/zstd";
import { type Digest, formatDigest, isEmptyDigest } from "../digest/digest";
import type { DigestConfig } from "../digest/instance-name";
import { type UploadResource, parseReadResourceName, parseWriteResourceName } from "../digest/resource-name";
import { GrpcCode, RpcError } from "../errors";
import {
  ByteStreamService,
  type QueryWriteStatusRequest,
  type QueryWriteStatusResponse,
  type ReadRequest,
  type ReadResponse,
  type WriteRequest,
  type WriteResponse,
} from "../proto/google/bytestream/bytestream";
import { decodeWriteRequest, encodeReadResponse } from "./bytestream-codec";
import type { ServiceEntry } from "./service-entry";
import { clientStreamHandler, serverStreamHandler, unaryHandler, writeMessage } from "./status";
import { type UploadSession, UploadSessions } from "./upload-sessions";

export interface ByteStreamServiceOptions {
  readonly cas: BlobStore;
  readonly digests: DigestConfig;
  /** How long an interrupted upload waits for its client to resume. Default 10 minutes. */
  readonly uploadIdleMs?: number;
}

export interface ByteStreamServiceHandle extends ServiceEntry {
  readonly sessions: UploadSessions;
  /** Aborts interrupted uploads; call after the gRPC server has stopped. */
  close(): Promise<void>;
}

/** Largest data field we send: well under gRPC's 4 MiB default, as clients with default limits need. */
export const READ_CHUNK_BYTES = 1024 * 1024;
const DEFAULT_UPLOAD_IDLE_MS = 10 * 60 * 1000;

/** The generated service, with codecs that copy blob bytes once less (bytestream-codec.ts). */
const BYTESTREAM_DEFINITION = {
  ...ByteStreamService,
  read: { ...ByteStreamService.read, responseSerialize: encodeReadResponse },
  write: { ...ByteStreamService.write, requestDeserialize: decodeWriteRequest },
} as const;

export function createByteStreamService(options: ByteStreamServiceOptions): ByteStreamServiceHandle {
  const { cas, digests } = options;
  const sessions = new UploadSessions(cas, options.uploadIdleMs ?? DEFAULT_UPLOAD_IDLE_MS);

  const isPresent = async (d: Digest): Promise<boolean> =>
    isEmptyDigest(d) || (await cas.findMissing([d])).length === 0;

  return {
    definition: BYTESTREAM_DEFINITION,
    sessions,
    close: () => sessions.close(),
    implementation: {
      read: serverStreamHandler<ReadRequest, ReadResponse>("Read", async (req, call) => {
        const resource = parseReadResourceName(req.resourceName, digests);
        const d = resource.digest;
        if (req.readLimit < 0) {
          throw RpcError.invalidArgument(`read_limit ${req.readLimit} is negative; use 0 to read to the end`);
        }
        if (resource.compression === "zstd" && req.readLimit !== 0) {
          throw RpcError.invalidArgument("read_limit must be 0 for compressed-blobs reads (REAPI); read the whole compressed stream");
        }
        if (req.readOffset < 0 || req.readOffset > d.sizeBytes) {
          throw new RpcError(
            GrpcCode.OUT_OF_RANGE,
            `read_offset ${req.readOffset} is outside blob ${formatDigest(d)}; it must be between 0 and ${d.sizeBytes}`,
          );
        }
        const source: AsyncIterable<Uint8Array> =
          isEmptyDigest(d) || req.readOffset === d.sizeBytes ? emptyChunks() : await cas.read(d, req.readOffset);
        if (resource.compression === "zstd") {
          // read_offset is in uncompressed bytes (REAPI); the compressed stream starts there.
          for await (const chunk of rechunk(zstdCompressStream(source), Number.POSITIVE_INFINITY)) {
            await writeMessage(call, { data: chunk });
          }
          return;
        }
        const limit = req.readLimit === 0 ? Number.POSITIVE_INFINITY : req.readLimit;
        for await (const chunk of rechunk(source, limit)) await writeMessage(call, { data: chunk });
      }),

      write: clientStreamHandler<WriteRequest, WriteResponse>("Write", (call) => handleWrite(call)),

      queryWriteStatus: unaryHandler<QueryWriteStatusRequest, QueryWriteStatusResponse>("QueryWriteStatus", async (req) => {
        const upload = parseWriteResourceName(req.resourceName, digests);
        const held = sessions.committedSize(UploadSessions.keyOf(upload));
        if (held !== undefined) return { committedSize: held, complete: false };
        if (await isPresent(upload.digest)) return { committedSize: completeSize(upload), complete: true };
        // Unknown upload: tell the client to start from the beginning, which every client handles.
        return { committedSize: 0, complete: false };
      }),
    },
  };

  async function handleWrite(call: grpc.ServerReadableStream<WriteRequest, WriteResponse>): Promise<WriteResponse> {
    let upload: UploadResource | undefined;
    let firstName = "";
    let session: UploadSession | undefined;
    let sink: Sink | undefined;
    let firstOffset = 0;
    let received = 0;
    let finished = false;
    try {
      for await (const req of call as AsyncIterable<WriteRequest>) {
        if (finished) throw RpcError.invalidArgument("a WriteRequest arrived after finish_write; finish_write must be on the last request");
        if (upload === undefined) {
          upload = parseWriteResourceName(req.resourceName, digests);
          firstName = req.resourceName;
          const key = UploadSessions.keyOf(upload);
          if (await isPresent(upload.digest)) {
            // REAPI: end at once when the blob already exists; the client stops sending.
            await sessions.discardIdle(key);
            return { committedSize: completeSize(upload) };
          }
          session = await sessions.claim(key, upload.digest);
          const held = session.writer.bytesWritten;
          if (req.writeOffset === 0 && held > 0) {
            await sessions.restart(session);
          } else if (req.writeOffset !== held) {
            throw RpcError.invalidArgument(
              `write_offset ${req.writeOffset} does not match the ${held} bytes this upload holds; ask QueryWriteStatus and resume from there, or restart at 0`,
            );
          }
          firstOffset = req.writeOffset;
          const remaining = upload.digest.sizeBytes - firstOffset;
          sink = upload.compression === "zstd" ? new ZstdSink(session.writer, remaining) : new PlainSink(session.writer);
        } else {
          if (req.resourceName !== "" && req.resourceName !== firstName) {
            throw RpcError.invalidArgument("resource_name changed within one Write stream; send it on the first request only");
          }
          // Compressed streams count compressed bytes after the first (uncompressed) offset, as REAPI specifies.
          const expected = firstOffset + received;
          if (req.writeOffset !== expected) {
            throw RpcError.invalidArgument(`write_offset ${req.writeOffset} is not the expected ${expected}; offsets must follow the bytes already sent`);
          }
        }
        await (sink as Sink).write(req.data);
        received += req.data.byteLength;
        if (req.finishWrite) finished = true;
      }
      if (upload === undefined || session === undefined || sink === undefined) {
        throw RpcError.invalidArgument("the Write stream carried no requests; send at least one with a resource_name");
      }
      if (!finished) {
        throw RpcError.invalidArgument(
          `the Write stream ended without finish_write after ${session.writer.bytesWritten} of ${upload.digest.sizeBytes} bytes; ask QueryWriteStatus and resume`,
        );
      }
      await sink.end();
      await session.writer.commit();
      await sessions.discard(session);
      session = undefined;
      return { committedSize: upload.compression === "zstd" ? firstOffset + received : upload.digest.sizeBytes };
    } catch (err) {
      if (session !== undefined) {
        await sink?.abandon();
        // Bad bytes poison the upload; an interrupted or mis-addressed stream leaves valid data to resume from.
        if (sink?.poisoned || finished || session.writer.bytesWritten === 0) await sessions.discard(session);
        else sessions.release(session);
      }
      throw err;
    }
  }
}

/** The committed_size for a blob that is already complete: full size plain, -1 compressed (REAPI). */
function completeSize(upload: UploadResource): number {
  return upload.compression === "zstd" ? -1 : upload.digest.sizeBytes;
}

/** Where a Write stream's data goes: straight into the writer, or through a zstd decoder first. */
interface Sink {
  /** True once the sink saw data that can never become the declared blob. */
  readonly poisoned: boolean;
  write(data: Uint8Array): Promise<void>;
  end(): Promise<void>;
  /** Stops without finishing and waits until no more bytes reach the writer. */
  abandon(): Promise<void>;
}

class PlainSink implements Sink {
  poisoned = false;
  constructor(private readonly writer: BlobWriter) {}

  async write(data: Uint8Array): Promise<void> {
    if (data.byteLength === 0) return;
    const total = this.writer.bytesWritten + data.byteLength;
    if (total > this.writer.digest.sizeBytes) {
      this.poisoned = true;
      throw RpcError.invalidArgument(
        `upload of ${formatDigest(this.writer.digest)} sent ${total} bytes, more than its size ${this.writer.digest.sizeBytes}`,
      );
    }
    try {
      await this.writer.write(data);
    } catch (err) {
      this.poisoned = true;
      throw err;
    }
  }

  async end(): Promise<void> {}
  async abandon(): Promise<void> {}
}

class ZstdSink implements Sink {
  poisoned = false;
  private readonly decoder: ZstdDecoder;
  private readonly consumed: Promise<void>;
  private failure: unknown;

  constructor(writer: BlobWriter, maxOutputBytes: number) {
    const decoder = new ZstdDecoder(maxOutputBytes);
    this.decoder = decoder;
    this.consumed = (async () => {
      for await (const out of decoder.output()) await writer.write(out);
    })().catch((err: unknown) => {
      this.failure = err;
      decoder.destroy();
    });
  }

  async write(data: Uint8Array): Promise<void> {
    try {
      await this.decoder.write(data);
    } catch (err) {
      throw this.fail(err);
    }
    if (this.failure !== undefined) throw this.fail(this.failure);
  }

  async end(): Promise<void> {
    try {
      await this.decoder.end();
    } catch (err) {
      throw this.fail(err);
    }
    await this.consumed;
    if (this.failure !== undefined) throw this.fail(this.failure);
  }

  async abandon(): Promise<void> {
    this.decoder.destroy();
    await this.consumed;
  }

  private fail(err: unknown): unknown {
    // A stopped consumer explains a failed write better than the decoder's "abandoned".
    const cause = this.failure ?? err;
    this.poisoned = true;
    return cause;
  }
}

async function* emptyChunks(): AsyncGenerator<Uint8Array> {}

/** Splits (and limits) a byte stream into messages of at most READ_CHUNK_BYTES. */
async function* rechunk(source: AsyncIterable<Uint8Array>, limit: number): AsyncGenerator<Buffer> {
  let left = limit;
  for await (const chunk of source) {
    for (let at = 0; at < chunk.byteLength && left > 0; ) {
      const n = Math.min(READ_CHUNK_BYTES, chunk.byteLength - at, left);
      yield Buffer.from(chunk.buffer, chunk.byteOffset + at, n);
      at += n;
      left -= n;
    }
    if (left <= 0) return;
  }
}
