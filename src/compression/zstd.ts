import { once } from "node:events";
import { promisify } from "node:util";
import * as zlib from "node:zlib";
import { RpcError } from "../errors";

/**
 * zstd for REAPI `compressed-blobs` and batch compressors. Every decoder is
 * bounded by the size the client declared, so a small "zip bomb" payload
 * cannot make the server allocate more than the blob it claims to be.
 */

const compressAsync = promisify(zlib.zstdCompress);

/** Compresses a whole blob; used for batch reads that accept ZSTD. */
export async function zstdCompress(data: Uint8Array): Promise<Buffer> {
  return compressAsync(data);
}

/**
 * Decompresses a whole payload whose uncompressed size is known in advance.
 * Corrupt input, or output longer than `expectedSize`, is INVALID_ARGUMENT.
 */
export async function zstdDecompressBounded(data: Uint8Array, expectedSize: number): Promise<Buffer> {
  const decoder = new ZstdDecoder(expectedSize);
  const parts: Buffer[] = [];
  const collecting = (async () => {
    for await (const chunk of decoder.output()) parts.push(chunk);
  })();
  try {
    await decoder.write(data);
    await decoder.end();
    await collecting;
  } catch (err) {
    decoder.destroy();
    await collecting.catch(() => {});
    throw err;
  }
  return Buffer.concat(parts);
}

/**
 * Streaming zstd decoder with backpressure: the producer awaits `write`, the
 * consumer iterates `output()`. Both sides see the same error, mapped to
 * INVALID_ARGUMENT because bad compressed data is always the client's fault.
 */
export class ZstdDecoder {
  private readonly stream = zlib.createZstdDecompress();
  private produced = 0;
  private failure: RpcError | undefined;

  constructor(private readonly maxOutputBytes: number) {
    this.stream.on("error", (err) => {
      this.failure ??= corrupt(err);
    });
  }

  /** Feeds compressed bytes; resolves once the decoder can take more. */
  async write(chunk: Uint8Array): Promise<void> {
    this.throwIfFailed();
    if (chunk.byteLength === 0) return;
    if (!this.stream.write(chunk)) await this.waitFor();
    this.throwIfFailed();
  }

  /** Signals the end of compressed input. */
  async end(): Promise<void> {
    this.throwIfFailed();
    this.stream.end();
  }

  /** Decompressed chunks; throws INVALID_ARGUMENT on corrupt input or on output beyond the declared size. */
  async *output(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of this.stream as AsyncIterable<Buffer>) {
        this.produced += chunk.byteLength;
        if (this.produced > this.maxOutputBytes) {
          this.failure ??= RpcError.invalidArgument(
            `zstd data decompresses to more than the ${this.maxOutputBytes} bytes the digest declares`,
          );
          this.stream.destroy();
          throw this.failure;
        }
        yield chunk;
      }
    } catch (err) {
      throw this.failure ?? corrupt(err);
    }
    this.throwIfFailed();
  }

  /** Stops decoding and frees native state; safe to call more than once. */
  destroy(): void {
    this.failure ??= RpcError.invalidArgument("zstd decoding was abandoned");
    this.stream.destroy();
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async waitFor(): Promise<void> {
    try {
      await drainOrClose(this.stream);
    } catch (err) {
      throw this.failure ?? corrupt(err);
    }
  }
}

/** Waits until a writable can take more, or is gone (so an abandoned pipeline never hangs). */
async function drainOrClose(stream: NodeJS.WritableStream & NodeJS.EventEmitter): Promise<void> {
  const ac = new AbortController();
  try {
    await Promise.race([once(stream, "drain", { signal: ac.signal }), once(stream, "close", { signal: ac.signal })]);
  } finally {
    ac.abort();
  }
}

/**
 * Streaming zstd encoder for compressed reads: feeds plain chunks in, yields
 * compressed chunks out, with backpressure in both directions.
 */
export async function* zstdCompressStream(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  const stream = zlib.createZstdCompress();
  let feedError: unknown;
  const feeding = (async () => {
    try {
      for await (const chunk of source) {
        if (stream.destroyed) return;
        if (chunk.byteLength > 0 && !stream.write(chunk)) await drainOrClose(stream);
      }
      stream.end();
    } catch (err) {
      feedError = err;
      stream.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  })();
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) yield chunk;
  } catch (err) {
    await feeding;
    throw feedError ?? err;
  } finally {
    stream.destroy();
  }
  await feeding;
  if (feedError !== undefined) throw feedError;
}

function corrupt(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return RpcError.invalidArgument(`zstd data is corrupt or truncated (${detail}); re-send the blob`);
}
