import { resolve } from "node:path";
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
import type { DigestFn } from "../digest/digest";
import { type ParsedFlags, UsageError } from "./parse-args";

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
    if (!c.startsWith("/nix/store/")) throw new UsageError(`--closure "${c}" is not a path under /nix/store`, "serve");
  }
  const instanceDigestFunctions: Record<string, DigestFn> = {};
  for (const [instance, fn] of flags.assignments("instance-digest-function")) {
    instanceDigestFunctions[instance] = fn as DigestFn;
  }
  const tcp = flags.hostPort("tcp");
  if (tcp !== undefined && !isLoopback(tcp.host)) {
    // Plaintext with no authentication would hand the cache (and execution)
    // to anyone on the network; TLS and tokens are not implemented yet.
    throw new UsageError(
      `--tcp ${tcp.host}:${tcp.port} is not a loopback address; lre's TCP listener has no TLS or authentication yet, so it only listens on 127.0.0.1, ::1 or localhost`,
      "serve",
    );
  }
  return {
    socketPath: socketPathFrom(flags, e),
    dataDir,
    ...(tcp === undefined ? {} : { tcp }),
    maxCacheBytes: flags.number("max-cache-size") ?? defaultMaxCacheBytes(dataDir),
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

/** Loopback hosts: the only ones a plaintext, unauthenticated listener may use. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
