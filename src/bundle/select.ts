import type { CachedResult } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import type { Digest, DigestFn } from "../digest/digest";
import { digestKey, fromWire, isEmptyDigest } from "../digest/digest";
import { GrpcCode, isRpcError } from "../errors";
import { Action, Directory } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/** One action-cache entry with its key. */
export interface AcEntry {
  readonly instance: string;
  readonly action: Digest;
  readonly entry: CachedResult;
}

/** What `lre export` writes. */
export type Selection =
  | { readonly kind: "all" }
  /** Blobs used at or after `cutoffMs`, and the action results used or added since then. */
  | { readonly kind: "since"; readonly cutoffMs: number; readonly label: string }
  /** The action result(s) of one action digest, in any instance; `fn` undefined matches either function. */
  | { readonly kind: "action"; readonly hash: string; readonly sizeBytes: number; readonly fn?: DigestFn };

export function describeSelection(s: Selection): string {
  switch (s.kind) {
    case "all":
      return "everything";
    case "since":
      return `used within ${s.label}`;
    case "action":
      return `action ${s.fn === undefined || s.fn === "sha256" ? "" : `${s.fn}/`}${s.hash}/${s.sizeBytes}`;
  }
}

/**
 * Blobs that let someone inspect an action without being needed for a hit:
 * the Action, its Command, and its input tree (Directory messages and files),
 * as far as they are in the CAS. Missing or undecodable pieces are skipped.
 */
export async function inspectionBlobs(cas: BlobStore, action: Digest): Promise<Digest[]> {
  const out: Digest[] = [action];
  const parsed = await tryDecode(cas, action, (b) => Action.decode(b));
  if (parsed === undefined) return out;
  const fn = action.fn;
  const command = tryWire(fn, parsed.commandDigest);
  if (command !== undefined) out.push(command);
  const root = tryWire(fn, parsed.inputRootDigest);
  const seen = new Set<string>();
  const pending = root === undefined ? [] : [root];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    if (seen.has(digestKey(d))) continue;
    seen.add(digestKey(d));
    out.push(d);
    const dir = await tryDecode(cas, d, (b) => Directory.decode(b));
    if (dir === undefined) continue;
    for (const f of dir.files) {
      const fd = tryWire(fn, f.digest);
      if (fd !== undefined) out.push(fd);
    }
    for (const sub of dir.directories) {
      const sd = tryWire(fn, sub.digest);
      if (sd !== undefined) pending.push(sd);
    }
  }
  return out.filter((d) => !isEmptyDigest(d));
}

async function tryDecode<T>(cas: BlobStore, d: Digest, decode: (b: Uint8Array) => T): Promise<T | undefined> {
  try {
    return decode(await cas.get(d));
  } catch (err) {
    // Absent, malformed, or not the message it should be: nothing to inspect there.
    if (isRpcError(err) && err.code !== GrpcCode.NOT_FOUND && err.code !== GrpcCode.INVALID_ARGUMENT) throw err;
    return undefined;
  }
}

function tryWire(fn: DigestFn, d: Parameters<typeof fromWire>[1]): Digest | undefined {
  try {
    return d === undefined ? undefined : fromWire(fn, d);
  } catch {
    return undefined;
  }
}
