import { formatSize } from "../config/size";
import type { Backend } from "./contracts";
import { withStorage } from "./stats";

/** `lre gc --to SIZE`: evicts least recently used blobs now, instead of waiting for the server to need room. */
export async function runGc(backend: Backend, dataDir: string, targetBytes: number, out: (text: string) => void): Promise<number> {
  const r = await withStorage(backend, dataDir, targetBytes, (s) => s.gc(targetBytes));
  out(`evicted ${r.evictedBlobs} blobs (${formatSize(r.evictedBytes)}); cache is now ${formatSize(r.bytesAfter)}\n`);
  return 0;
}
