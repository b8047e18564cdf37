import { constants as fsConstants } from "node:fs";
import { access, mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { open } from "lmdb";
import type { Database, RootDatabase } from "lmdb";
import { GrpcCode, RpcError } from "../errors";

/** Where a CAS blob lives: inline in LMDB, or as a file under `<dataDir>/cas/`. */
export const enum BlobLocation {
  Inline = 0,
  File = 1,
}

/** Index value: `[sizeBytes, location]`. Kept tiny so FindMissing and scans never touch blob bodies. */
export type IndexEntry = [number, BlobLocation];

/**
 * The one LMDB environment of a data directory and its named tables. CAS and
 * AC share it so a process holds one env, as LMDB requires (reliability-targets §2).
 */
export interface LmdbEnv {
  readonly dataDir: string;
  readonly root: RootDatabase;
  /** digestKey -> IndexEntry. */
  readonly casIndex: Database<IndexEntry, string>;
  /** digestKey -> blob bytes, for blobs up to the inline threshold. */
  readonly casInline: Database<Buffer, string>;
  /** digestKey -> last use (ms). Separate from the index so recording a use can never resurrect a deleted entry. */
  readonly casUsed: Database<number, string>;
  /** `instance\0digestKey` -> origin byte + encoded ActionResult. */
  readonly ac: Database<Buffer, string>;
  /** Counters shared between processes (AC hits and misses). */
  readonly meta: Database<number, string>;
  /** Drops this holder's reference; the env closes when the last one is released. */
  release(): Promise<void>;
}

interface Shared {
  env: Omit<LmdbEnv, "release">;
  refs: number;
}

const open_ = new Map<string, Promise<Shared>>();

/**
 * Opens (or shares) the env of `dataDir`. A directory that cannot be created
 * or written is FAILED_PRECONDITION naming it, since only the operator can fix it.
 */
export async function acquireEnv(dataDirIn: string): Promise<LmdbEnv> {
  const dataDir = resolve(dataDirIn);
  let p = open_.get(dataDir);
  if (p === undefined) {
    p = openShared(dataDir);
    open_.set(dataDir, p);
    p.catch(() => open_.delete(dataDir));
  }
  const shared = await p;
  shared.refs++;
  let released = false;
  return {
    ...shared.env,
    release: async () => {
      if (released) return;
      released = true;
      if (--shared.refs > 0) return;
      open_.delete(dataDir);
      await shared.env.root.flushed;
      await shared.env.root.close();
    },
  };
}

async function openShared(dataDir: string): Promise<Shared> {
  try {
    await mkdir(`${dataDir}/lmdb`, { recursive: true });
    await access(`${dataDir}/lmdb`, fsConstants.W_OK);
  } catch (err) {
    throw new RpcError(
      GrpcCode.FAILED_PRECONDITION,
      `data directory ${dataDir} cannot be written (${err instanceof Error ? err.message : String(err)}); choose a writable --data-dir or fix its permissions`,
      { cause: err },
    );
  }
  let root: RootDatabase;
  try {
    // Default sync mode on purpose: no noSync, no useWritemap (durability and
    // SIGBUS on a full disk, reliability-targets §2). Writes are acknowledged
    // only after `flushed`, which overlappingSync makes necessary.
    root = open({ path: `${dataDir}/lmdb`, maxDbs: 8, compression: false });
  } catch (err) {
    throw RpcError.failedPrecondition(
      `cannot open the LMDB database in ${dataDir}/lmdb: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const env = {
    dataDir,
    root,
    casIndex: root.openDB<IndexEntry, string>({ name: "cas-index", encoding: "msgpack" }),
    casInline: root.openDB<Buffer, string>({ name: "cas-inline", encoding: "binary" }),
    casUsed: root.openDB<number, string>({ name: "cas-used", encoding: "msgpack" }),
    ac: root.openDB<Buffer, string>({ name: "ac", encoding: "binary" }),
    meta: root.openDB<number, string>({ name: "meta", encoding: "msgpack" }),
  };
  return { env, refs: 0 };
}
