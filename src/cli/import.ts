import { LmdbActionCache } from "../ac/lmdb-action-cache";
import { DamagedBundleError } from "../bundle/bundle-reader";
import { importBundle } from "../bundle/import-bundle";
import { defaultMaxCacheBytes, type Environment } from "../config/defaults";
import { formatSize } from "../config/size";
import { CliError, messageOf } from "./cli-error";
import type { Backend } from "./contracts";
import { singleFile } from "./export";
import type { ParsedFlags } from "./parse-args";
import { dataDirFrom } from "./serve-config";
import { withStorage } from "./stats";

/** `lre import FILE`: verifies the whole bundle, then adds what the store lacks (action results as client uploads unless --trust-origin). */
export async function runImport(
  backend: Backend,
  operands: readonly string[],
  flags: ParsedFlags,
  e: Environment,
  out: (text: string) => void,
): Promise<number> {
  const file = singleFile(operands, "import");
  const dataDir = dataDirFrom(flags, e);
  const protectMs = flags.number("protect-for");
  const options = {
    dataDir,
    maxBytes: flags.number("max-cache-size") ?? ("as served" as const),
    defaultMaxBytes: defaultMaxCacheBytes(dataDir),
    ...(protectMs === undefined ? {} : { protectMs }),
  };
  const s = await withStorage(backend, options, async (storage) => {
    const ac = await LmdbActionCache.open({ dataDir });
    try {
      return await importBundle(file, { cas: storage.cas, ac }, { trustOrigin: flags.bool("trust-origin") });
    } catch (err) {
      if (err instanceof DamagedBundleError) throw new CliError(`${err.message}; nothing was imported`);
      throw new CliError(`importing "${file}" failed: ${messageOf(err)}`);
    } finally {
      await ac.close();
    }
  });
  const present = s.presentBlobs + s.presentActionResults;
  out(`added ${s.addedBlobs} blobs (${formatSize(s.addedBytes)}) and ${s.addedActionResults} action results; ${present} already present\n`);
  return 0;
}
