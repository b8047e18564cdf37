import { status as GrpcCode } from "@grpc/grpc-js";

export { GrpcCode };

/** One missing blob, reported to clients as a PreconditionFailure violation. */
export interface MissingBlob {
  /** `blobs/{hash}/{size}` (with `blake3/` before the hash for BLAKE3), as REAPI asks. */
  readonly subject: string;
}

/**
 * The one error type of lre. It carries the gRPC status code the client will
 * see, so every layer can throw it and the gRPC adapter (src/grpc/status.ts)
 * turns it into a wire status without guessing.
 *
 * Messages say what was wrong and what to do about it.
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  readonly code: GrpcCode;
  /** Blobs whose absence caused a FAILED_PRECONDITION, for Bazel's re-upload retry. */
  readonly missing: readonly MissingBlob[];

  constructor(code: GrpcCode, message: string, options: { cause?: unknown; missing?: readonly MissingBlob[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.missing = options.missing ?? [];
  }

  static invalidArgument(message: string): RpcError {
    return new RpcError(GrpcCode.INVALID_ARGUMENT, message);
  }
  static notFound(message: string): RpcError {
    return new RpcError(GrpcCode.NOT_FOUND, message);
  }
  static failedPrecondition(message: string, missing: readonly MissingBlob[] = []): RpcError {
    return new RpcError(GrpcCode.FAILED_PRECONDITION, message, { missing });
  }
  static resourceExhausted(message: string): RpcError {
    return new RpcError(GrpcCode.RESOURCE_EXHAUSTED, message);
  }
  static internal(message: string, cause?: unknown): RpcError {
    return new RpcError(GrpcCode.INTERNAL, message, { cause });
  }
  static unimplemented(message: string): RpcError {
    return new RpcError(GrpcCode.UNIMPLEMENTED, message);
  }
}

/** Adds context to an error while keeping its code; unknown errors become INTERNAL. */
export function wrapError(err: unknown, context: string): RpcError {
  if (err instanceof RpcError) {
    return new RpcError(err.code, `${context}: ${err.message}`, { cause: err, missing: err.missing });
  }
  const detail = err instanceof Error ? err.message : String(err);
  return new RpcError(GrpcCode.INTERNAL, `${context}: ${detail}`, { cause: err });
}

export function isRpcError(err: unknown, code?: GrpcCode): err is RpcError {
  return err instanceof RpcError && (code === undefined || err.code === code);
}
