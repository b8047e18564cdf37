import type { Digest } from "../digest/digest";
import { formatDigest } from "../digest/digest";
import { GrpcCode, RpcError } from "../errors";

/** A read offset must lie within the blob (offset == size reads nothing); anything else is the client's mistake. */
export function checkReadOffset(digest: Digest, offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > digest.sizeBytes) {
    throw RpcError.invalidArgument(
      `read offset ${offset} is outside blob ${formatDigest(digest)}; it must be between 0 and ${digest.sizeBytes}`,
    );
  }
}

/** The size check every store does itself (it is free); hash checks are the VerifyingBlobStore's job. */
export function checkSize(digest: Digest, actual: number): void {
  if (actual !== digest.sizeBytes) {
    throw RpcError.invalidArgument(
      `blob ${formatDigest(digest)} was sent with ${actual} bytes but its digest says ${digest.sizeBytes} (expected ${digest.sizeBytes}, actual ${actual}); resend the exact bytes`,
    );
  }
}

export function checkHash(digest: Digest, actualHash: string): void {
  if (actualHash !== digest.hash) {
    throw RpcError.invalidArgument(
      `blob uploaded as ${formatDigest(digest)} hashes to ${actualHash} with ${digest.fn} (expected ${digest.hash}, actual ${actualHash}); the bytes do not match the digest`,
    );
  }
}

export function blobNotFound(digest: Digest): RpcError {
  return RpcError.notFound(`blob ${formatDigest(digest)} is not in the CAS; upload it first`);
}

export function storeClosed(name: string): RpcError {
  return new RpcError(GrpcCode.UNAVAILABLE, `the ${name} blob store is closed; the server is shutting down, retry later`);
}

export function writeFinished(digest: Digest): RpcError {
  return RpcError.failedPrecondition(`the upload of ${formatDigest(digest)} is already committed or aborted; start a new one`);
}
