import { RpcError } from "../errors";
import type { DigestFunction_Value } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import { type DigestFn, fnFromWire } from "./digest";

/**
 * Path segments REAPI reserves so resource names can be parsed by locating the
 * keyword; an instance name containing one would make names ambiguous.
 */
export const RESERVED_SEGMENTS: ReadonlySet<string> = new Set([
  "blobs",
  "uploads",
  "actions",
  "actionResults",
  "operations",
  "capabilities",
  "compressed-blobs",
]);

const MAX_INSTANCE_NAME_BYTES = 1024;
// Printable ASCII without "/" (the separator); control bytes and NUL never reach logs or keys.
const SEGMENT = /^[\x21-\x2e\x30-\x7e]+$/;

/**
 * Why a segment cannot be part of an instance name, or undefined when it can.
 * Shared with the resource-name parser so both give the same answer.
 */
export function instanceSegmentProblem(segment: string): string | undefined {
  if (segment === "") return "it has an empty segment (a leading, trailing or doubled '/')";
  if (segment === "." || segment === "..") return `it has a "${segment}" segment`;
  if (RESERVED_SEGMENTS.has(segment)) return `it has the reserved segment "${segment}"`;
  if (!SEGMENT.test(segment)) return `its segment "${segment.slice(0, 40)}" has characters other than printable ASCII`;
  return undefined;
}

/**
 * Validates an instance name and returns it unchanged. The empty name is the
 * default instance. Instance names key the action cache, so anything that could
 * alias two instances or escape a path is refused (reliability target H-3).
 */
export function parseInstanceName(name: string): string {
  if (name === "") return name;
  if (name.length > MAX_INSTANCE_NAME_BYTES) {
    throw RpcError.invalidArgument(`instance name is ${name.length} bytes long; the limit is ${MAX_INSTANCE_NAME_BYTES}`);
  }
  for (const segment of name.split("/")) {
    const problem = instanceSegmentProblem(segment);
    if (problem !== undefined) {
      throw RpcError.invalidArgument(
        `instance name "${name.slice(0, 80)}" is not valid: ${problem}; use "/"-separated segments of printable ASCII, none of them ".", ".." or a reserved word (${[...RESERVED_SEGMENTS].join(", ")})`,
      );
    }
  }
  return name;
}

/**
 * Which digest function an instance uses when a request does not say. Buck2
 * never sends `digest_function`, so a BLAKE3 Buck2 setup binds the function to
 * its instance name (the approach Buildfarm took).
 */
export interface DigestConfig {
  readonly defaultDigestFn: DigestFn;
  /** Per-instance overrides, keyed by exact instance name. */
  readonly instanceDigestFn?: Readonly<Record<string, DigestFn>>;
}

export const DEFAULT_DIGEST_CONFIG: DigestConfig = { defaultDigestFn: "sha256" };

/** The function an instance defaults to. Own-property lookup, so names like "constructor" are not inherited keys. */
export function instanceDefaultFn(config: DigestConfig, instance: string): DigestFn {
  const overrides = config.instanceDigestFn;
  if (overrides !== undefined && Object.hasOwn(overrides, instance)) {
    const fn = overrides[instance];
    if (fn !== undefined) return fn;
  }
  return config.defaultDigestFn;
}

/** The function a request uses: its own `digest_function` when set, otherwise the instance's default. */
export function requestDigestFn(config: DigestConfig, instance: string, wire: DigestFunction_Value | undefined): DigestFn {
  return fnFromWire(wire, instanceDefaultFn(config, instance));
}
