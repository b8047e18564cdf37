import { resolve } from "node:path";
import { parseStorePath } from "../../sandbox/mod";
import type { LogLevel, ServeConfig } from "../config/config";
import {
  DEFAULT_ACTION_TIMEOUT_SECONDS,
  DEFAULT_GRACE_SECONDS,
  MAX_ACTION_TIMEOUT_SECONDS,
  defaultDataDir,
  defaultJobs,
  defaultMaxCacheBytes,
  defaultSocketPath,
  type Environment,
} from "../config/defaults";
import { DEFAULT_PROTECT_MS } from "../cas/size-bounded-blob-store";
import type { DigestFn } from "../digest/digest";
import { parseInstanceName } from "../digest/instance-name";
import { type ExecuteUpstreamMode, type UpstreamConfig, parseUpstreamUrl } from "../upstream/upstream-config";
import { type ParsedFlags, UsageError } from "./parse-args";
import { isLoopback } from "./loopback";
import { tcpSecurityFrom } from "./tcp-security";

/** Paths given on the command line are taken relative to the working directory. */
export function dataDirFrom(flags: ParsedFlags, e: Environment): string {
  return resolve(flags.string("data-dir") ?? defaultDataDir(e));
}

export function socketPathFrom(flags: ParsedFlags, e: Environment): string {
  return resolve(flags.string("socket") ?? defaultSocketPath(e));
}

/** The typed settings of `lre serve`; only values the parser cannot check alone are checked here. */
export function serveConfigFrom(flags: ParsedFlags, e: Environment): ServeConfig {
  const dataDir = dataDirFrom(flags, e);
  const defaultTimeoutS = flags.number("action-timeout") ?? DEFAULT_ACTION_TIMEOUT_SECONDS;
  const maxTimeoutS = flags.number("max-action-timeout") ?? MAX_ACTION_TIMEOUT_SECONDS;
  if (defaultTimeoutS > maxTimeoutS) {
    throw new UsageError(
      `--action-timeout ${defaultTimeoutS} is more than --max-action-timeout ${maxTimeoutS}; lower the first or raise the second`,
      "serve",
    );
  }
  const closures = flags.strings("closure");
  for (const c of closures) {
    // Only the shape here; whether Nix knows the path is checked as the executor starts.
    if (parseStorePath(c) === undefined) {
      throw new UsageError(
        `--closure "${c}" is not a Nix store path: expected /nix/store/<32-character hash>-<name>, as printed by \`nix-build\` or \`nix path-info\``,
        "serve",
      );
    }
  }
  const instanceDigestFunctions: Record<string, DigestFn> = {};
  for (const [instance, fn] of flags.assignments("instance-digest-function")) {
    instanceDigestFunctions[instance] = fn as DigestFn;
  }
  const tcp = flags.hostPort("tcp");
  // Off loopback, refuses to start without TLS and a way to tell callers apart.
  const tcpSecurity = tcpSecurityFrom(flags, tcp);
  const upstream = upstreamConfigFrom(flags);
  return {
    ...(upstream === undefined ? {} : { upstream }),
    socketPath: socketPathFrom(flags, e),
    dataDir,
    ...(tcp === undefined ? {} : { tcp }),
    tcpSecurity,
    maxCacheBytes: flags.number("max-cache-size") ?? defaultMaxCacheBytes(dataDir),
    protectMs: flags.number("protect-for") ?? DEFAULT_PROTECT_MS,
    logLevel: (flags.string("log-level") ?? "info") as LogLevel,
    digestFunction: (flags.string("digest-function") ?? "sha256") as DigestFn,
    instanceDigestFunctions,
    graceMs: Math.round((flags.number("grace") ?? DEFAULT_GRACE_SECONDS) * 1000),
    exec: {
      enabled: !flags.bool("no-exec"),
      jobs: flags.number("jobs") ?? defaultJobs(),
      closures,
      defaultTimeoutMs: defaultTimeoutS * 1000,
      maxTimeoutMs: maxTimeoutS * 1000,
    },
  };
}

/** The --upstream* flags; the others make no sense without --upstream. */
function upstreamConfigFrom(flags: ParsedFlags): UpstreamConfig | undefined {
  const url = flags.string("upstream");
  const execute = (flags.string("execute-upstream") ?? "never") as ExecuteUpstreamMode;
  const caFile = flags.string("upstream-ca");
  const tokenFile = flags.string("upstream-token-file");
  const instance = flags.string("upstream-instance");
  if (url === undefined) {
    const stray = [["upstream-ca", caFile], ["upstream-token-file", tokenFile], ["upstream-instance", instance]].find(([, v]) => v !== undefined);
    if (stray !== undefined) throw new UsageError(`--${stray[0]} needs --upstream URL`, "serve");
    if (execute !== "never") throw new UsageError(`--execute-upstream ${execute} needs --upstream URL`, "serve");
    return undefined;
  }
  let parsed: ReturnType<typeof parseUpstreamUrl>;
  try {
    parsed = parseUpstreamUrl(url);
  } catch (err) {
    throw new UsageError(`--upstream ${err instanceof Error ? err.message : String(err)}`, "serve");
  }
  if (caFile !== undefined && !parsed.tls) throw new UsageError(`--upstream-ca needs a grpcs:// upstream, not "${url}"`, "serve");
  if (tokenFile !== undefined && !parsed.tls && parsed.host !== undefined && !isLoopback(parsed.host)) {
    // A bearer token in plaintext is readable by anyone on the path.
    throw new UsageError(`--upstream-token-file with "${url}" would send the token unencrypted; use grpcs://`, "serve");
  }
  let upInstance: string | undefined;
  if (instance !== undefined) {
    try {
      upInstance = parseInstanceName(instance);
    } catch (err) {
      throw new UsageError(`--upstream-instance: ${err instanceof Error ? err.message : String(err)}`, "serve");
    }
  }
  return {
    url,
    target: parsed.target,
    tls: parsed.tls,
    ...(caFile === undefined ? {} : { caFile: resolve(caFile) }),
    ...(tokenFile === undefined ? {} : { tokenFile: resolve(tokenFile) }),
    ...(upInstance === undefined ? {} : { instance: upInstance }),
    execute,
  };
}

export { isLoopback };
