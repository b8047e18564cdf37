import type { ActionCache, ResultOrigin } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey } from "../digest/digest";
import { hashBytes } from "../digest/hasher";
import { wrapError } from "../errors";
import { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { DamagedBundleError, walkBundle } from "./bundle-reader";
import type { ActionResultFrame, BundleHeader } from "./format";

/** Where an import writes: the full CAS stack (it verifies every blob again) and the action cache. */
export interface BundleTarget {
  readonly cas: BlobStore;
  /** Used for put, and for get to tell an identical entry already there. */
  readonly ac: ActionCache;
}

export interface ImportOptions {
  /**
   * Keep the origin each action result claims (run by lre, or uploaded by a
   * client). Off by default: the bundle's checksum shows it is intact, not
   * who wrote it, so anyone could mark a result as run by lre.
   */
  readonly trustOrigin?: boolean;
}

export interface ImportSummary {
  readonly header: BundleHeader;
  readonly addedBlobs: number;
  readonly addedBytes: number;
  readonly addedActionResults: number;
  readonly presentBlobs: number;
  readonly presentActionResults: number;
}

/**
 * Imports the bundle at `path` in two passes over the file:
 *
 * 1. verify: framing, every blob against its digest, every action result and
 *    instance name as UpdateActionResult checks them, totals and the checksum
 *    of the whole file. Nothing is written, so a damaged or truncated bundle
 *    (a changed byte anywhere, the footer included), or one holding a single
 *    result lre would refuse, leaves the store exactly as it was.
 * 2. import: blobs through BlobWriters (which check each digest once more
 *    and publish only on commit), then the action results. An action result
 *    is written only if it is byte for byte one that pass 1 verified, so a
 *    file changed between the passes cannot slip in an unverified entry.
 *
 * Blobs come before action results in a bundle, so an entry never becomes
 * visible before the blobs it needs. Action results are recorded as client
 * uploads unless `trustOrigin` is set.
 */
export async function importBundle(path: string, target: BundleTarget, options: ImportOptions = {}): Promise<ImportSummary> {
  const originOf = (f: ActionResultFrame): ResultOrigin => (options.trustOrigin === true ? f.origin : "client");
  const verified: string[] = [];
  await walkBundle(path, {
    actionResult: (f) => void verified.push(fingerprint(f)),
  });

  let addedBlobs = 0;
  let addedBytes = 0;
  let presentBlobs = 0;
  let addedActionResults = 0;
  let presentActionResults = 0;
  let nth = 0;
  const importing = walkBundle(path, {
    blob: async (f, body) => {
      if ((await target.cas.findMissing([f.digest])).length === 0) {
        presentBlobs++;
        return;
      }
      await storeBlob(target.cas, f.digest, body);
      addedBlobs++;
      addedBytes += f.digest.sizeBytes;
    },
    actionResult: async (f) => {
      if (verified[nth++] !== fingerprint(f)) {
        throw new Error(`bundle "${path}" changed while it was being imported; its action results were not imported`);
      }
      const origin = originOf(f);
      const existing = await target.ac.get(f.instance, f.action);
      // The same result already recorded as run by lre stays so: an untrusted copy must not downgrade it.
      if (existing !== undefined && (existing.origin === origin || existing.origin === "sandbox") && sameResult(existing.result, f.result)) {
        presentActionResults++;
        return;
      }
      try {
        await target.ac.put(f.instance, f.action, { result: f.result, origin });
      } catch (err) {
        throw wrapError(err, `storing an imported action result`);
      }
      addedActionResults++;
    },
  });
  let header: BundleHeader;
  try {
    ({ header } = await importing);
  } catch (err) {
    if (!(err instanceof DamagedBundleError)) throw err;
    // Pass 1 found it intact, so the file changed in between. What was added was verified on the way in.
    throw new Error(`bundle "${path}" changed while it was being imported (${err.message}); ${addedBlobs} blobs and ${addedActionResults} action results were added, each verified`);
  }
  return { header, addedBlobs, addedBytes, addedActionResults, presentBlobs, presentActionResults };
}

async function storeBlob(cas: BlobStore, digest: Digest, body: AsyncIterable<Uint8Array>): Promise<void> {
  const w = await cas.beginWrite(digest);
  try {
    for await (const chunk of body) await w.write(chunk);
    await w.commit();
  } catch (err) {
    await w.abort();
    throw err;
  }
}

function fingerprint(f: ActionResultFrame): string {
  const key = `${f.instance}\0${digestKey(f.action)}\0${f.origin satisfies ResultOrigin}\0`;
  const body = ActionResult.encode(f.result).finish();
  const all = new Uint8Array(key.length * 3 + body.byteLength);
  const { written = 0 } = new TextEncoder().encodeInto(key, all);
  all.set(body, written);
  return hashBytes("sha256", all.subarray(0, written + body.byteLength));
}

function sameResult(a: ActionResult, b: ActionResult): boolean {
  return Buffer.from(ActionResult.encode(a).finish()).equals(ActionResult.encode(b).finish());
}
