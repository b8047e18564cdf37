import { parseInstanceName } from "../digest/instance-name";
import {
  CapabilitiesService,
  Compressor_Value,
  DigestFunction_Value,
  type GetCapabilitiesRequest,
  type ServerCapabilities,
  SymlinkAbsolutePathStrategy_Value,
} from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { ServiceEntry } from "./service-entry";
import { unaryHandler } from "./status";

/**
 * Advertised API versions. 2.0 must stay inside [low, high] for Bazel 4.2.3;
 * the high end is 2.3 because lre honours compressed-blobs and the compressor
 * lists (2.3) but does not claim the 2.5+ wire changes until they are tested
 * against clients that negotiate them.
 */
export const LOW_API_VERSION = { major: 2, minor: 0, patch: 0, prerelease: "" };
export const HIGH_API_VERSION = { major: 2, minor: 3, patch: 0, prerelease: "" };
export const DEPRECATED_API_VERSION = { major: 2, minor: 0, patch: 0, prerelease: "" };

/**
 * The batch limit clients are told. Buck2 treats 0 as 4,000,000 anyway; the
 * server's receive limit is far above it so a batch at exactly this size
 * still fits once framed (buck2#563).
 */
export const MAX_BATCH_TOTAL_SIZE_BYTES = 4_000_000;

export interface CapabilitiesOptions {
  readonly execEnabled: boolean;
}

export function serverCapabilities(options: CapabilitiesOptions): ServerCapabilities {
  return {
    cacheCapabilities: {
      digestFunctions: [DigestFunction_Value.SHA256, DigestFunction_Value.BLAKE3],
      actionCacheUpdateCapabilities: { updateEnabled: true },
      cachePriorityCapabilities: undefined,
      maxBatchTotalSizeBytes: MAX_BATCH_TOTAL_SIZE_BYTES,
      symlinkAbsolutePathStrategy: SymlinkAbsolutePathStrategy_Value.ALLOWED,
      // zstd both ways over ByteStream; Buck2 switches to it automatically when listed.
      supportedCompressors: [Compressor_Value.ZSTD],
      supportedBatchUpdateCompressors: [],
      maxCasBlobSizeBytes: 0,
    },
    executionCapabilities: {
      // Bazel 4.2.3 insists on SHA256 in the singular field.
      digestFunction: DigestFunction_Value.SHA256,
      execEnabled: options.execEnabled,
      executionPriorityCapabilities: undefined,
      supportedNodeProperties: [],
      digestFunctions: [DigestFunction_Value.SHA256, DigestFunction_Value.BLAKE3],
    },
    deprecatedApiVersion: DEPRECATED_API_VERSION,
    lowApiVersion: LOW_API_VERSION,
    highApiVersion: HIGH_API_VERSION,
  };
}

export function createCapabilitiesService(options: CapabilitiesOptions): ServiceEntry {
  const reply = serverCapabilities(options);
  return {
    definition: CapabilitiesService,
    implementation: {
      getCapabilities: unaryHandler<GetCapabilitiesRequest, ServerCapabilities>(
        "GetCapabilities",
        async (req) => {
          parseInstanceName(req.instanceName);
          return reply;
        },
      ),
    },
  };
}
