import { readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { open as openLmdb } from "lmdb";
import type { Digest } from "../../src/digest/digest";
import { digestKey, isEmptyDigest, toWire } from "../../src/digest/digest";
import type { ReapiClients } from "../support/grpc-client";
import type { Oracle } from "./oracle";
import { readBack } from "./workload";

const REPO = resolve(import.meta.dir, "..", "..");
const BUN = join(REPO, "node_modules", ".bin", "bun");

export interface Findings {
  readonly violations: string[];
  /** Figures worth printing: bytes accounted, blobs re-hashed, and so on. */
  readonly facts: Record<string, number>;
}

/**
 * Everything that must hold once `lre serve` is back up on a data directory
 * it was SIGKILLed on (reliability-targets §8.3): acknowledged blobs present
 * and intact, acknowledged action results complete hits, no temp leftovers,
 * no index entry without a right-sized body, and byte accounting that agrees
 * with the disk and with `lre stats`.
 *
 * Call with no uploads running: the accounting checks compare snapshots.
 */
export async function checkStore(c: ReapiClients, dataDir: string, oracle: Oracle, fullReadBack: boolean): Promise<Findings> {
  const violations: string[] = [];
  const facts: Record<string, number> = {};

  // Temp files of interrupted uploads are gone once the server is up.
  const leftovers = readdirSync(join(dataDir, "tmp"));
  if (leftovers.length > 0) violations.push(`${leftovers.length} temp file(s) left in tmp/ after startup: ${leftovers.slice(0, 5).join(", ")}`);

  // Every acknowledged blob is present...
  const acked = [...oracle.acked.values()];
  const missing = await findMissing(c, acked);
  for (const d of missing) violations.push(`acknowledged blob ${d.hash}/${d.sizeBytes} is missing`);

  // ...and re-hashes to its digest when read back.
  const toRead = fullReadBack ? acked : [...oracle.unverified.values()];
  const missingKeys = new Set(missing.map(digestKey));
  let readBytes = 0;
  await eachLimited(toRead.filter((d) => !missingKeys.has(digestKey(d))), 4, async (d) => {
    try {
      const got = await readBack(c, d);
      readBytes += got.size;
      if (got.size !== d.sizeBytes || got.hash !== d.hash) {
        violations.push(`blob ${d.hash}/${d.sizeBytes} reads back as ${got.hash}/${got.size}`);
      }
    } catch (err) {
      violations.push(`reading blob ${d.hash}/${d.sizeBytes} failed: ${describe(err)}`);
    }
  });
  oracle.unverified = new Map();
  facts.blobsReadBack = toRead.length;
  facts.bytesReadBack = readBytes;

  // Every acknowledged action result is a complete hit.
  for (const a of oracle.actions.values()) {
    try {
      const res = await c.getActionResult({ actionDigest: toWire(a.action) });
      const got = res.outputFiles.map((f) => `${f.path}=${f.digest?.hash}/${f.digest?.sizeBytes}`).join(",");
      const want = a.blobs.map((d, i) => `${a.outputPaths[i]}=${d.hash}/${d.sizeBytes}`).join(",");
      if (got !== want) violations.push(`action ${a.action.hash}: outputs ${got}, acknowledged ${want}`);
    } catch (err) {
      violations.push(`acknowledged action ${a.action.hash} is not a hit: ${describe(err)}`);
    }
    const gone = await findMissing(c, a.blobs);
    if (gone.length > 0) violations.push(`action ${a.action.hash} names ${gone.length} missing blob(s)`);
  }

  // The index as stored: no entry without a right-sized body.
  const index = readIndex(dataDir);
  for (const p of index.problems) violations.push(p);
  facts.indexedBlobs = index.entries.size;
  facts.indexedBytes = index.bytes;

  // Files on disk: each is indexed with its size, or an unacknowledged upload caught between rename and index put.
  let fileBytes = 0;
  let orphans = 0;
  for (const { name, size } of casFiles(dataDir)) {
    const hash = name.replace(/^sha256-/, "");
    const key = `sha256:${hash}:${size}`;
    if (index.entries.get(key) === "file") {
      fileBytes += size;
      continue;
    }
    orphans++;
    if (oracle.acked.has(key)) violations.push(`acknowledged blob ${hash}/${size} has a file but no index entry`);
    else if (!oracle.attempted.has(key)) violations.push(`file cas/…/${name} (${size} B) is not a blob anyone uploaded in full`);
  }
  facts.fileBytes = fileBytes;
  facts.orphanFiles = orphans;
  if (fileBytes !== index.fileBytes) violations.push(`indexed file blobs account ${index.fileBytes} B but their files hold ${fileBytes} B`);

  // Accounting: acked ≤ stored ≤ acked + attempted-but-unacked, and `lre stats` agrees with the index.
  const ackedBytes = sum(acked);
  const maybeBytes = sum([...oracle.attempted.entries()].filter(([k]) => !oracle.acked.has(k)).map(([, d]) => d));
  facts.ackedBytes = ackedBytes;
  if (index.bytes < ackedBytes || index.bytes > ackedBytes + maybeBytes) {
    violations.push(`store holds ${index.bytes} B; acknowledged ${ackedBytes} B, at most ${maybeBytes} B more were in flight`);
  }
  const stats = await lreStats(dataDir);
  facts.statsBytes = stats.bytes;
  facts.statsBlobs = stats.blobs;
  if (stats.bytes !== index.bytes) violations.push(`lre stats reports ${stats.bytes} B, the index holds ${index.bytes} B`);
  if (stats.acEntries < oracle.actions.size || stats.acEntries > oracle.attemptedActions.size) {
    violations.push(`lre stats reports ${stats.acEntries} AC entries; ${oracle.actions.size} acknowledged of ${oracle.attemptedActions.size} attempted`);
  }
  return { violations, facts };
}

async function findMissing(c: ReapiClients, digests: readonly Digest[]): Promise<Digest[]> {
  const out: Digest[] = [];
  for (let i = 0; i < digests.length; i += 5000) {
    const part = digests.slice(i, i + 5000);
    const res = await c.findMissingBlobs({ blobDigests: part.map(toWire) });
    const gone = new Set(res.missingBlobDigests.map((d) => `${d.hash}/${d.sizeBytes}`));
    out.push(...part.filter((d) => !isEmptyDigest(d) && gone.has(`${d.hash}/${d.sizeBytes}`)));
  }
  return out;
}

interface IndexView {
  entries: Map<string, "inline" | "file">;
  bytes: number;
  fileBytes: number;
  problems: string[];
}

/**
 * Reads the CAS index straight from LMDB (read-only, beside the running
 * server, as LMDB allows): the only way to see an entry no client asks about.
 */
function readIndex(dataDir: string): IndexView {
  const root = openLmdb({ path: join(dataDir, "lmdb"), readOnly: true, maxDbs: 8, compression: false });
  const view: IndexView = { entries: new Map(), bytes: 0, fileBytes: 0, problems: [] };
  try {
    const index = root.openDB<[number, number], string>({ name: "cas-index", encoding: "msgpack" });
    const inline = root.openDB<Buffer, string>({ name: "cas-inline", encoding: "binary" });
    for (const { key, value } of index.getRange({})) {
      const [fn, hash] = key.split(":");
      const [size, location] = value;
      view.bytes += size;
      if (location === 1) {
        view.entries.set(key, "file");
        view.fileBytes += size;
        const path = join(dataDir, "cas", (hash ?? "").slice(0, 2), `${fn}-${hash}`);
        let onDisk = -1;
        try {
          onDisk = statSync(path).size;
        } catch {
          // reported below
        }
        if (onDisk !== size) view.problems.push(`index entry ${key} names a file of ${onDisk < 0 ? "no" : onDisk} bytes`);
      } else {
        view.entries.set(key, "inline");
        const body = inline.getBinary(key);
        if (body === undefined || body.byteLength !== size) {
          view.problems.push(`index entry ${key} has an inline body of ${body === undefined ? "no" : body.byteLength} bytes`);
        }
      }
    }
  } finally {
    void root.close();
  }
  return view;
}

function casFiles(dataDir: string): { name: string; size: number }[] {
  const out: { name: string; size: number }[] = [];
  const cas = join(dataDir, "cas");
  for (const shard of readdirSync(cas)) {
    for (const name of readdirSync(join(cas, shard))) out.push({ name, size: statSync(join(cas, shard, name)).size });
  }
  return out;
}

/** `lre stats --json`, the CLI users run, beside the server. */
async function lreStats(dataDir: string): Promise<{ blobs: number; bytes: number; acEntries: number }> {
  const proc = Bun.spawn([BUN, join(REPO, "src", "main.ts"), "stats", "--data-dir", dataDir, "--json"], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`lre stats exited with ${code}: ${err}`);
  return JSON.parse(out) as { blobs: number; bytes: number; acEntries: number };
}

function sum(ds: readonly Digest[]): number {
  return ds.reduce((n, d) => n + d.sizeBytes, 0);
}

async function eachLimited<T>(items: readonly T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

export function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "number" ? `gRPC ${code}: ${err.message}` : err.message;
  }
  return String(err);
}
