import type { DigestFn } from "../digest/digest";
import type { UpstreamConfig } from "../upstream/upstream-config";

/** Typed settings of `lre serve`, built from flags and defaults by src/cli/serve-config.ts. */

export type LogLevel = "error" | "warn" | "info" | "debug";
export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug"];

export interface TcpAddress {
  readonly host: string;
  readonly port: number;
}

/** How the TCP listener is protected (src/cli/tcp-security.ts); paths are absolute. */
export interface TcpSecurityConfig {
  /** TLS on the TCP listener; with clientCaFile, client certificates are required. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly clientCaFile?: string };
  /** Bearer tokens every TCP call but GetCapabilities must carry. */
  readonly tokenFile?: string;
}

/** Settings for the executor; the CLI only collects them. */
export interface ExecConfig {
  /** False turns lre into a cache only (no Execute service). */
  readonly enabled: boolean;
  /** Actions run at once. */
  readonly jobs: number;
  /** Nix store paths whose closures every action may see. */
  readonly closures: readonly string[];
  /** Timeout for actions that set none. */
  readonly defaultTimeoutMs: number;
  /** Larger Action.timeout values are rejected. */
  readonly maxTimeoutMs: number;
}

export interface ServeConfig {
  readonly socketPath: string;
  readonly dataDir: string;
  readonly tcp?: TcpAddress;
  /** Empty without --tcp. */
  readonly tcpSecurity: TcpSecurityConfig;
  readonly maxCacheBytes: number;
  /** Blobs used within this window are never evicted (--protect-for). */
  readonly protectMs: number;
  readonly logLevel: LogLevel;
  /** For requests that do not name a digest function (Bazel < 6.4 speaks only SHA-256, Buck2 never names one). */
  readonly digestFunction: DigestFn;
  /** Per-instance digest function, for clients such as Buck2 that never say which they use. */
  readonly instanceDigestFunctions: Readonly<Record<string, DigestFn>>;
  /** How long running work may take to finish after SIGINT/SIGTERM. */
  readonly graceMs: number;
  readonly exec: ExecConfig;
  /** Another REAPI server this one fronts (read-through, write-behind, optional execution). */
  readonly upstream?: UpstreamConfig;
}
