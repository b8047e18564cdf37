/**
 * Large blobs that are never held in memory: a 1 MiB random pool cut into
 * chunks, each stamped with (seed, chunk index) so every seed gives a distinct
 * blob (a CAS would skip a repeat upload) and no two chunks are equal.
 * Iterating twice gives the same bytes, so the digest can be computed before
 * the timed upload.
 */
import type { Digest } from "../../src/digest/digest";
import { createHasher } from "../../src/digest/hasher";

const POOL = crypto.getRandomValues(new Uint8Array(1024 * 1024));

export interface SyntheticBlob {
  readonly size: number;
  /** Fresh buffers of `chunkBytes` (the last may be shorter); callers may keep them. */
  chunks(): Generator<Uint8Array>;
  digest(): Digest;
}

export function syntheticBlob(size: number, seed: number, chunkBytes = 64 * 1024): SyntheticBlob {
  if (chunkBytes < 16 || POOL.byteLength % chunkBytes !== 0) throw new RangeError(`chunkBytes ${chunkBytes} must divide 1 MiB and be at least 16`);
  function* chunks(): Generator<Uint8Array> {
    for (let at = 0, i = 0; at < size; at += chunkBytes, i++) {
      const n = Math.min(chunkBytes, size - at);
      const off = at % POOL.byteLength;
      const c = POOL.slice(off, off + n);
      if (n >= 16) {
        const v = new DataView(c.buffer);
        v.setFloat64(0, seed);
        v.setFloat64(8, i);
      }
      yield c;
    }
  }
  let cached: Digest | undefined;
  return {
    size,
    chunks,
    digest() {
      if (cached !== undefined) return cached;
      const h = createHasher("sha256");
      for (const c of chunks()) h.update(c);
      cached = { fn: "sha256", hash: h.hex(), sizeBytes: size };
      return cached;
    },
  };
}
