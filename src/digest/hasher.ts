import { Blake3Hasher, blake3 } from "@napi-rs/blake-hash";
import type { Digest, DigestFn } from "./digest";

/** Incremental hasher used while streaming uploads and outputs. */
export interface Hasher {
  update(chunk: Uint8Array): void;
  /** Hex digest; the hasher must not be used afterwards. */
  hex(): string;
}

// BLAKE3's native one-shot call has ~2 µs fixed cost, slower than SHA-NI SHA-256
// for tiny blobs, but it is still the only correct answer for a BLAKE3 digest.
export function hashBytes(fn: DigestFn, data: Uint8Array): string {
  if (fn === "sha256") return Bun.SHA256.hash(data, "hex");
  return blake3(toBuffer(data)).toString("hex");
}

export function digestOf(fn: DigestFn, data: Uint8Array): Digest {
  return { fn, hash: hashBytes(fn, data), sizeBytes: data.byteLength };
}

export function createHasher(fn: DigestFn): Hasher {
  if (fn === "sha256") {
    const h = new Bun.CryptoHasher("sha256");
    return {
      update: (chunk) => void h.update(chunk),
      hex: () => h.digest("hex"),
    };
  }
  const h = new Blake3Hasher();
  return {
    update: (chunk) => void h.update(toBuffer(chunk)),
    hex: () => h.digest("hex"),
  };
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
