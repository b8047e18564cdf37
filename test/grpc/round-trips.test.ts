import { MemoryActionCache } from "../../src/ac/memory-action-cache";
import { MemoryBlobStore } from "../../src/cas/memory-blob-store";
import { TRANSPORTS } from "./harness";
import { describeRoundTrips } from "./round-trips";

for (const transport of TRANSPORTS) {
  describeRoundTrips("memory stores", transport, async () => {
    const cas = new MemoryBlobStore();
    const ac = new MemoryActionCache();
    return { cas, ac, cleanup: async () => Promise.all([cas.close(), ac.close()]).then(() => {}) };
  });
}
