import type { BlobStore } from "../cas/blob-store";
import type { Digest } from "../digest/digest";
import { digestKey, formatDigest } from "../digest/digest";
import { GrpcCode, RpcError, isRpcError } from "../errors";
import { BundleWriter } from "./bundle-writer";
import { FORMAT_VERSION } from "./format";
import { requiredBlobs } from "../ac/referenced-blobs";
import { type AcEntry, type Selection, describeSelection, inspectionBlobs } from "./select";

/** Where an export reads from: the CAS and a listing of the action cache. */
export interface BundleSource {
  readonly cas: BlobStore;
  actionResults(): AsyncIterable<AcEntry>;
}

export interface ExportSummary {
  readonly blobs: number;
  readonly blobBytes: number;
  readonly actionResults: number;
  /** Action results left out because a blob they need is not in the CAS (they would be misses anyway). */
  readonly incomplete: number;
  readonly fileBytes: number;
}

export interface ExportOptions {
  readonly selection: Selection;
  readonly nowMs: number;
  /** `lre --version`, recorded in the bundle. */
  readonly writer: string;
}

/**
 * Writes the selected blobs and action results to `path` as one bundle (see
 * format.ts). Blobs are streamed from the store one at a time. A blob evicted
 * while the export runs is left out, and so is every action result needing
 * it, so the bundle never promises a hit it cannot serve.
 */
export async function exportBundle(path: string, source: BundleSource, o: ExportOptions): Promise<ExportSummary> {
  const plan = await planExport(source, o.selection);
  const out = await BundleWriter.create(path, { createdAtMs: o.nowMs, writer: o.writer, selection: describeSelection(o.selection) }, FORMAT_VERSION);
  try {
    const written = new Set<string>();
    for await (const d of plan.blobs()) {
      const key = digestKey(d);
      if (written.has(key)) continue;
      let chunks: AsyncIterable<Uint8Array>;
      try {
        chunks = await source.cas.read(d);
      } catch (err) {
        if (isRpcError(err, GrpcCode.NOT_FOUND)) continue;
        throw err;
      }
      await out.addBlob(d, chunks);
      written.add(key);
    }
    let actionResults = 0;
    let incomplete = plan.incomplete;
    for await (const e of plan.entries()) {
      const needed = await requiredBlobs(source.cas, e.entry.result, e.action.fn);
      const missing = needed === undefined ? undefined : needed.find((d) => !written.has(digestKey(d)));
      if (needed === undefined || missing !== undefined) {
        if (o.selection.kind === "action") {
          throw RpcError.failedPrecondition(
            `the action result of ${formatDigest(e.action)} needs ${missing === undefined ? "an output Tree" : `blob ${formatDigest(missing)}`}, which is not in the CAS, so it cannot be exported complete`,
          );
        }
        incomplete++;
        continue;
      }
      await out.addActionResult({ instance: e.instance, action: e.action, origin: e.entry.origin, result: e.entry.result });
      actionResults++;
    }
    const totals = await out.finish();
    return { blobs: totals.blobs, blobBytes: totals.blobBytes, actionResults, incomplete, fileBytes: out.bytes };
  } catch (err) {
    await out.abort();
    throw err;
  }
}

interface Plan {
  blobs(): AsyncIterable<Digest>;
  entries(): AsyncIterable<AcEntry>;
  /** Entries already known to be incomplete while planning. */
  readonly incomplete: number;
}

async function planExport(source: BundleSource, s: Selection): Promise<Plan> {
  switch (s.kind) {
    case "all":
      return {
        blobs: async function* () {
          for await (const b of source.cas.list()) yield b.digest;
        },
        entries: () => source.actionResults(),
        incomplete: 0,
      };
    case "since":
      return planSince(source, s.cutoffMs);
    case "action":
      return planAction(source, s);
  }
}

/**
 * Blobs carry their last use; action results carry no time of their own. A
 * result counts as used or added within the window when every blob it needs
 * was used in it: a cache hit touches all of them, and a new result's outputs
 * were just uploaded or found present. A result needing no blobs at all (no
 * outputs, empty stdout and stderr) falls back to its Action blob's last use.
 */
async function planSince(source: BundleSource, cutoffMs: number): Promise<Plan> {
  const recent = new Map<string, Digest>();
  for await (const b of source.cas.list()) if (b.lastUsedMs >= cutoffMs) recent.set(digestKey(b.digest), b.digest);
  const selected: AcEntry[] = [];
  let incomplete = 0;
  for await (const e of source.actionResults()) {
    const needed = await requiredBlobs(source.cas, e.entry.result, e.action.fn);
    if (needed === undefined) {
      incomplete++;
      continue;
    }
    const witnesses = needed.length > 0 ? needed : [e.action];
    if (witnesses.every((d) => recent.has(digestKey(d)))) selected.push(e);
  }
  return {
    blobs: async function* () {
      yield* recent.values();
    },
    entries: async function* () {
      yield* selected;
    },
    incomplete,
  };
}

async function planAction(source: BundleSource, s: Extract<Selection, { kind: "action" }>): Promise<Plan> {
  const matches: AcEntry[] = [];
  for await (const e of source.actionResults()) {
    if (e.action.hash === s.hash && e.action.sizeBytes === s.sizeBytes && (s.fn === undefined || e.action.fn === s.fn)) matches.push(e);
  }
  if (matches.length === 0) {
    throw RpcError.notFound(`the action cache has no result for action ${describeSelection(s).slice("action ".length)}, in any instance`);
  }
  const blobs: Digest[] = [];
  for (const e of matches) {
    const needed = await requiredBlobs(source.cas, e.entry.result, e.action.fn);
    if (needed === undefined) {
      throw RpcError.failedPrecondition(
        `the action result of ${formatDigest(e.action)} (instance "${e.instance}") has an output Tree that is missing or malformed, so it cannot be exported complete`,
      );
    }
    blobs.push(...needed, ...(await inspectionBlobs(source.cas, e.action)));
  }
  return {
    blobs: async function* () {
      yield* blobs;
    },
    entries: async function* () {
      yield* matches;
    },
    incomplete: 0,
  };
}
