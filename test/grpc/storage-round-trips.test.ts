import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStorage } from "../../src/storage/open-storage";
import { TRANSPORTS } from "./harness";
import { describeRoundTrips } from "./round-trips";

// The same exchanges against the production stack: LMDB, file blobs, verification, completeness checking.
for (const transport of TRANSPORTS) {
  describeRoundTrips("openStorage in a temp dir", transport, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "lre-grpc-storage-"));
    const storage = await openStorage({ dataDir, maxBytes: 1024 * 1024 * 1024, inlineMaxBytes: 64 * 1024 });
    return {
      cas: storage.cas,
      ac: storage.ac,
      cleanup: async () => {
        await storage.close();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  });
}
