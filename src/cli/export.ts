import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { LmdbActionCache } from "../ac/lmdb-action-cache";
import { exportBundle } from "../bundle/export-bundle";
import type { Selection } from "../bundle/select";
import { defaultMaxCacheBytes, type Environment } from "../config/defaults";
import { parseDuration } from "../config/duration";
import { formatSize } from "../config/size";
import type { DigestFn } from "../digest/digest";
import { CliError, messageOf } from "./cli-error";
import type { Backend } from "./contracts";
import { type ParsedFlags, UsageError } from "./parse-args";
import { dataDirFrom } from "./serve-config";
import { withStorage } from "./stats";
import { versionLine } from "./version";

/** `HASH/SIZE`, also with a leading `sha256/` or `blake3/` (the form lre prints in logs). */
export function parseActionDigest(text: string): Extract<Selection, { kind: "action" }> {
  const m = /^(?:(sha256|blake3)\/)?([0-9a-fA-F]{64})\/(\d+)$/.exec(text);
  if (m === null || !Number.isSafeInteger(Number(m[3]))) {
    throw new RangeError(`"${text}" is not an action digest HASH/SIZE (64 hex characters, a slash, the size in bytes)`);
  }
  const hash = (m[2] as string).toLowerCase();
  const sizeBytes = Number(m[3]);
  return m[1] === undefined ? { kind: "action", hash, sizeBytes } : { kind: "action", hash, sizeBytes, fn: m[1] as DigestFn };
}

export function selectionFrom(flags: ParsedFlags, nowMs: number): Selection {
  const since = flags.string("since");
  const action = flags.string("action");
  if (since !== undefined && action !== undefined) throw new UsageError("give --since or --action, not both", "export");
  try {
    if (since !== undefined) return { kind: "since", cutoffMs: nowMs - parseDuration(since), label: since };
    if (action !== undefined) return parseActionDigest(action);
  } catch (err) {
    throw new UsageError(`bad value for "--${since !== undefined ? "since" : "action"}": ${messageOf(err)}`, "export");
  }
  return { kind: "all" };
}

/** `lre export FILE`: one bundle with the selected blobs and action results. */
export async function runExport(
  backend: Backend,
  operands: readonly string[],
  flags: ParsedFlags,
  e: Environment,
  out: (text: string) => void,
): Promise<number> {
  const file = singleFile(operands, "export");
  const dataDir = dataDirFrom(flags, e);
  const nowMs = Date.now();
  const selection = selectionFrom(flags, nowMs);
  if (!existsSync(join(dataDir, "lmdb"))) {
    throw new CliError(`data dir "${dataDir}" holds no lre store; give the one lre serve uses with --data-dir`);
  }
  const summary = await withStorage(backend, { dataDir, maxBytes: defaultMaxCacheBytes(dataDir) }, async (storage) => {
    const ac = await LmdbActionCache.open({ dataDir });
    try {
      return await exportBundle(file, { cas: storage.cas, actionResults: () => ac.entries() }, { selection, nowMs, writer: versionLine() });
    } catch (err) {
      throw new CliError(`cannot export to "${file}": ${messageOf(err)}`);
    } finally {
      await ac.close();
    }
  });
  const skipped = summary.incomplete === 0 ? "" : `; left out ${summary.incomplete} action results whose blobs are gone`;
  out(
    `exported ${summary.blobs} blobs (${formatSize(summary.blobBytes)}) and ${summary.actionResults} action results to ${file} (${formatSize(summary.fileBytes)})${skipped}\n`,
  );
  return 0;
}

/** The one FILE operand of export and import, resolved against the working directory. */
export function singleFile(operands: readonly string[], command: string): string {
  if (operands.length === 0) throw new UsageError(`"lre ${command}" needs the bundle FILE`, command);
  if (operands.length > 1) throw new UsageError(`"lre ${command}" takes one FILE, got ${operands.length}`, command);
  return resolve(operands[0] as string);
}
