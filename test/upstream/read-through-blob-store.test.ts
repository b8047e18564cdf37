import { systemClock } from "../../src/clock";
import { UpstreamClient } from "../../src/upstream/upstream-client";
import { UpstreamHealth } from "../../src/upstream/upstream-health";
import { ReadThroughBlobStore } from "../../src/upstream/read-through-blob-store";
import { runBlobStoreConformance } from "../cas/blob-store.conformance";
import { startFront } from "./upstream-fixture";

// Nothing writes to this upstream, so the suite's blobs are absent there and
// every case applies, delete included; what read-through adds (fetching what
// only the upstream has) is tested in upstream.e2e.test.ts.
runBlobStoreConformance(
  "ReadThroughBlobStore over openStorage().cas, with a real upstream",
  async ({ clock, defer }) => {
    const front = await startFront(clock, defer);
    const client = new UpstreamClient(front.upstream.config);
    defer(async () => client.close());
    return new ReadThroughBlobStore(front.storage.cas, client, new UpstreamHealth(systemClock), { instance: "" });
  },
  { verifiesHashes: true },
);
