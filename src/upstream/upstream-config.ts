/** Typed settings of `lre serve --upstream …`, built by src/cli/serve-config.ts. */

/**
 * When Execute goes to the upstream instead of the local executor:
 * - `never`: always run locally (the upstream is only a cache);
 * - `always`: always forward; an unreachable upstream is an error the client sees;
 * - `fallback`: forward, but run locally when the upstream cannot take the
 *   action: it is known to be down, the connection fails, or it answers
 *   UNAVAILABLE or UNIMPLEMENTED before its first Operation. Errors after the
 *   first Operation are passed to the client, which retries (WaitExecution).
 */
export type ExecuteUpstreamMode = "never" | "fallback" | "always";
export const EXECUTE_UPSTREAM_MODES: readonly ExecuteUpstreamMode[] = ["never", "fallback", "always"];

export interface UpstreamConfig {
  /** As given: `grpc://HOST:PORT`, `grpcs://HOST:PORT` or `unix:///PATH`. */
  readonly url: string;
  /** The gRPC target derived from `url`. */
  readonly target: string;
  readonly tls: boolean;
  /** PEM file of CA certificates for `grpcs://`; the system roots when absent. */
  readonly caFile?: string;
  /** File holding a bearer token sent as `authorization: Bearer TOKEN`. */
  readonly tokenFile?: string;
  /** Instance name used upstream; absent means "the same as the request's". */
  readonly instance?: string;
  readonly execute: ExecuteUpstreamMode;
}

/** Splits an upstream URL into its gRPC target and transport; throws RangeError naming what is accepted. */
export function parseUpstreamUrl(url: string): { target: string; tls: boolean; host?: string } {
  const m = /^(grpcs?):\/\/([^/]+)\/?$/.exec(url);
  if (m !== null) {
    const hostPort = m[2]!;
    const hp = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(hostPort);
    if (hp === null || Number(hp[2]) < 1 || Number(hp[2]) > 65535) {
      throw new RangeError(`"${url}" has no valid HOST:PORT after ${m[1]}://`);
    }
    return { target: hostPort, tls: m[1] === "grpcs", host: hp[1]!.replace(/^\[(.*)\]$/, "$1") };
  }
  if (/^unix:\/\/\/./.test(url) || /^unix:\/[^/]/.test(url)) return { target: url, tls: false };
  throw new RangeError(`"${url}" is not grpc://HOST:PORT, grpcs://HOST:PORT or unix:///PATH`);
}
