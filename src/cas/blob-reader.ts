import { CHUNK_BYTES } from "./blob-store";

/**
 * Yields `data` from `offset` in CHUNK_BYTES slices. Slices are views, not
 * copies, so a large in-memory blob is never duplicated while streaming.
 */
export async function* chunksOf(data: Uint8Array, offset = 0): AsyncGenerator<Uint8Array> {
  for (let at = offset; at < data.byteLength; at += CHUNK_BYTES) {
    yield data.subarray(at, Math.min(at + CHUNK_BYTES, data.byteLength));
  }
}
