import { RpcError } from "../errors";
import { DigestFunction_Value } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Digest as WireDigest } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/** Digest functions lre can verify. Both produce 64 hex characters, so the function is always explicit. */
export type DigestFn = "sha256" | "blake3";

export const DIGEST_FUNCTIONS: readonly DigestFn[] = ["sha256", "blake3"];

/** A blob's identity. Unlike the wire Digest it names its function, since SHA-256 and BLAKE3 hashes look alike. */
export interface Digest {
  readonly fn: DigestFn;
  readonly hash: string;
  readonly sizeBytes: number;
}

const HEX64 = /^[0-9a-f]{64}$/;

export const EMPTY_HASH: Readonly<Record<DigestFn, string>> = {
  sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  blake3: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
};

export function emptyDigest(fn: DigestFn): Digest {
  return { fn, hash: EMPTY_HASH[fn], sizeBytes: 0 };
}

export function isEmptyDigest(d: Digest): boolean {
  return d.sizeBytes === 0 && d.hash === EMPTY_HASH[d.fn];
}

/** Validates hash and size; throws INVALID_ARGUMENT naming `what` so the client knows which field was bad. */
export function makeDigest(fn: DigestFn, hash: string, sizeBytes: number, what = "digest"): Digest {
  if (!HEX64.test(hash)) {
    throw RpcError.invalidArgument(
      `${what} has hash "${hash.slice(0, 80)}", which is not 64 lowercase hex characters as ${fn} requires`,
    );
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
    throw RpcError.invalidArgument(`${what} has size ${sizeBytes}; a size must be a non-negative integer`);
  }
  return { fn, hash, sizeBytes };
}

/**
 * Converts a request's list of wire digests, dropping the empty blob (always
 * present, REAPI) and repeats. Builds no per-digest strings unless one is bad:
 * FindMissingBlobs lists carry thousands of digests and this runs for each.
 */
export function uniqueNonEmptyDigests(fn: DigestFn, wire: readonly WireDigest[], field: string): Digest[] {
  const out: Digest[] = [];
  // Keyed by hash alone (no key string to build); a repeat with another size is rare and kept apart.
  const byHash = new Map<string, Digest>();
  let otherSizes: Set<string> | undefined;
  const empty = EMPTY_HASH[fn];
  for (let i = 0; i < wire.length; i++) {
    const w = wire[i] as WireDigest;
    const { hash, sizeBytes } = w;
    if (!HEX64.test(hash) || !Number.isSafeInteger(sizeBytes) || sizeBytes < 0) makeDigest(fn, hash, sizeBytes, `${field}[${i}]`);
    if (sizeBytes === 0 && hash === empty) continue;
    const seen = byHash.get(hash);
    if (seen === undefined) {
      const d: Digest = { fn, hash, sizeBytes };
      byHash.set(hash, d);
      out.push(d);
    } else if (seen.sizeBytes !== sizeBytes) {
      otherSizes ??= new Set();
      const key = `${hash}/${sizeBytes}`;
      if (!otherSizes.has(key)) {
        otherSizes.add(key);
        out.push({ fn, hash, sizeBytes });
      }
    }
  }
  return out;
}

/** Converts a wire Digest; a missing message is INVALID_ARGUMENT. */
export function fromWire(fn: DigestFn, d: WireDigest | undefined, what = "digest"): Digest {
  if (d === undefined) throw RpcError.invalidArgument(`${what} is missing`);
  return makeDigest(fn, d.hash, d.sizeBytes, what);
}

export function toWire(d: Digest): WireDigest {
  return { hash: d.hash, sizeBytes: d.sizeBytes };
}

/** Stable map key for a digest, including its function. */
export function digestKey(d: Digest): string {
  return `${d.fn}:${d.hash}:${d.sizeBytes}`;
}

/** `hash/size`, the form used in logs and error messages. */
export function formatDigest(d: Digest): string {
  return `${d.fn === "sha256" ? "" : `${d.fn}/`}${d.hash}/${d.sizeBytes}`;
}

/** The PreconditionFailure subject REAPI asks for: `blobs/{df/}{hash}/{size}`, df only for non-legacy functions. */
export function missingSubject(d: Digest): string {
  return `blobs/${formatDigest(d)}`;
}

/** Maps the request's `digest_function` field; UNKNOWN (0) means "not said", and the caller's default applies. */
export function fnFromWire(value: DigestFunction_Value | undefined, fallback: DigestFn): DigestFn {
  switch (value) {
    case undefined:
    case DigestFunction_Value.UNKNOWN:
      return fallback;
    case DigestFunction_Value.SHA256:
      return "sha256";
    case DigestFunction_Value.BLAKE3:
      return "blake3";
    default:
      throw RpcError.invalidArgument(
        `digest function ${DigestFunction_Value[value] ?? value} is not supported; lre supports SHA256 and BLAKE3`,
      );
  }
}

export function fnToWire(fn: DigestFn): DigestFunction_Value {
  return fn === "sha256" ? DigestFunction_Value.SHA256 : DigestFunction_Value.BLAKE3;
}
