import { formatSize } from "../config/size";
import type { Backend } from "./contracts";
import { withStorage } from "./stats";

/** `lre gc --to SIZE`: evicts least recently used blobs now, instead of waiting for the server to need room. */
export async function runGc(
  backend: Backend,
  options: { dataDir: string; targetBytes: number; protectMs?: number },
  out: (text: string) => void,
): Promise<number> {
  const { dataDir, targetBytes, protectMs } = options;
  const storage = { dataDir, maxBytes: targetBytes, ...(protectMs === undefined ? {} : { protectMs }) };
  const r = await withStorage(backend, storage, (s) => s.gc(targetBytes));
  out(`evicted ${r.evictedBlobs} blobs (${formatSize(r.evictedBytes)}); cache is now ${formatSize(r.bytesAfter)}\n`);
  return 0;
}
