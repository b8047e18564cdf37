import type { Clock } from "../clock";
import type { BlobStore } from "./blob-store";
import { EmptyBlobStore } from "./empty-blob-store";
import { LmdbBlobStore } from "./lmdb-blob-store";
import { MemoryBlobStore } from "./memory-blob-store";
import { SizeBoundedBlobStore } from "./size-bounded-blob-store";
import { VerifyingBlobStore } from "./verifying-blob-store";

/**
 * A CAS described as data, so configuration, tests and `openStorage` build
 * stacks the same way. Decorators name their `backend`.
 */
export type BlobStoreSpec =
  | { kind: "memory"; verify?: boolean }
  | { kind: "lmdb"; dataDir: string; inlineMaxBytes?: number }
  | { kind: "verifying"; backend: BlobStoreSpec; verifyOnRead?: boolean }
  | { kind: "empty"; backend: BlobStoreSpec }
  | { kind: "size-bounded"; backend: BlobStoreSpec; maxBytes: number; protectMs?: number; evictionSlack?: number };

export interface CreateBlobStoreContext {
  clock?: Clock;
}

export async function createBlobStore(spec: BlobStoreSpec, ctx: CreateBlobStoreContext = {}): Promise<BlobStore> {
  const clock = ctx.clock === undefined ? {} : { clock: ctx.clock };
  switch (spec.kind) {
    case "memory":
      return new MemoryBlobStore({ ...clock, ...(spec.verify === undefined ? {} : { verify: spec.verify }) });
    case "lmdb":
      return LmdbBlobStore.open({
        dataDir: spec.dataDir,
        ...clock,
        ...(spec.inlineMaxBytes === undefined ? {} : { inlineMaxBytes: spec.inlineMaxBytes }),
      });
    case "verifying":
      return new VerifyingBlobStore(await createBlobStore(spec.backend, ctx), {
        ...(spec.verifyOnRead === undefined ? {} : { verifyOnRead: spec.verifyOnRead }),
      });
    case "empty":
      return new EmptyBlobStore(await createBlobStore(spec.backend, ctx));
    case "size-bounded":
      return new SizeBoundedBlobStore(await createBlobStore(spec.backend, ctx), {
        maxBytes: spec.maxBytes,
        ...clock,
        ...(spec.protectMs === undefined ? {} : { protectMs: spec.protectMs }),
        ...(spec.evictionSlack === undefined ? {} : { evictionSlack: spec.evictionSlack }),
      });
    default:
      return unreachable(spec);
  }
}

function unreachable(spec: never): never {
  throw new Error(`unknown blob store kind in ${JSON.stringify(spec)}`);
}
