import { silentLog } from "../../src/upstream/upstream-log";
import { startUpstream } from "../../src/upstream/start-upstream";
import { runBlobStoreConformance } from "../cas/blob-store.conformance";
import { startFront } from "./upstream-fixture";

// The CAS lre serve --upstream serves: write-behind over read-through over
// the local store, with the uploader draining the queue to a real upstream.
runBlobStoreConformance(
  "WriteBehindBlobStore as lre serve --upstream stacks it, uploading to a real upstream",
  async ({ clock, defer }) => {
    const front = await startFront(clock, defer);
    const running = await startUpstream(front.upstream.config, front.storage, {
      dataDir: front.dataDir,
      digests: { defaultDigestFn: "sha256" },
      log: silentLog,
    });
    defer(() => running.close());
    return running.storage.cas;
  },
  // The uploader copies each blob to the upstream moments after it is stored,
  // and read-through fetches it back after a local delete: by design, since
  // delete on this stack is local eviction, not removal from the upstream.
  { verifiesHashes: true, deletedBlobsMayReturn: true },
);
