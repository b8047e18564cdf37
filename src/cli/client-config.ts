import { join } from "node:path";
import type { DigestFn } from "../digest/digest";
import { isLoopback } from "./loopback";

/**
 * The client settings that match how lre serves, as `.bazelrc` lines or a
 * `.buckconfig` section for the user to paste. `config-command.ts` turns
 * flags into these options and refuses combinations lre serve would refuse.
 */

/** TLS as a client sees it; every path absolute. */
export interface ClientTls {
  /** PEM CA certificates lre's certificate chains to; the client's own roots without it. */
  readonly caFile?: string;
  /** For lre serve --tls-client-ca. Buck2 wants the key in this same file. */
  readonly clientCertFile?: string;
  /** Bazel only: the key of clientCertFile. */
  readonly clientKeyFile?: string;
}

/** lre serve --tcp as the client reaches it. */
export interface TcpEndpoint {
  readonly host: string;
  readonly port: number;
  /** Undefined: plaintext (loopback only). */
  readonly tls?: ClientTls;
  /**
   * Environment variable holding a bearer token when the client runs, for
   * lre serve --token-file. A variable, not the token, so the secret never
   * lands in a file that might be committed.
   */
  readonly tokenEnv?: string;
}

export interface BazelConfigOptions {
  readonly endpoint: { readonly socketPath: string; readonly customSocket: boolean } | TcpEndpoint;
  readonly instance?: string;
  readonly closures: readonly string[];
  /** Home directory, for the netty library path and the private token rc file. */
  readonly home: string;
}

export interface Buck2ConfigOptions {
  readonly endpoint: TcpEndpoint;
  readonly instance?: string;
  readonly digestFunction: DigestFn;
}

/** Timeout for every RPC but Execute (which Bazel never times out): room for large blobs, still finite. */
export const BAZEL_REMOTE_TIMEOUT_SECONDS = 300;

export const DEFAULT_BUCK2_ADDRESS = { host: "127.0.0.1", port: 8980 } as const;

export function bazelConfig(o: BazelConfigOptions): string {
  const ep = o.endpoint;
  const tcp = "host" in ep ? ep : undefined;
  const lines: string[] = [];
  if (tcp === undefined) {
    const socket = ep as { socketPath: string; customSocket: boolean };
    lines.push(
      `# lre: start the server with "lre serve${socket.customSocket ? ` --socket ${socket.socketPath}` : ""}", then build as usual.`,
      rcLine(`--remote_executor=unix://${socket.socketPath}`),
    );
  } else {
    lines.push(`# lre: ${serveHint(tcp, [])}, then build as usual.`, rcLine(`--remote_executor=${tcp.tls === undefined ? "grpc" : "grpcs"}://${hostPort(tcp)}`));
    if (tcp.tls?.caFile !== undefined) {
      lines.push("# The CA that signed lre's certificate; without it Bazel trusts only the JDK's public roots.", rcLine(`--tls_certificate=${tcp.tls.caFile}`));
    }
    if (tcp.tls?.clientCertFile !== undefined && tcp.tls.clientKeyFile !== undefined) {
      lines.push(
        "# This client's certificate and key, for lre serve --tls-client-ca.",
        rcLine(`--tls_client_certificate=${tcp.tls.clientCertFile}`),
        rcLine(`--tls_client_key=${tcp.tls.clientKeyFile}`),
      );
    }
    if (tcp.tokenEnv !== undefined) {
      const tokenRc = join(o.home, ".lre-token.bazelrc");
      lines.push(
        "# The bearer token stays out of this file. Bazel rc files cannot read environment variables, so write the",
        `# header once, from $${tcp.tokenEnv}, to a file only you can read and that is never committed:`,
        `#   (umask 077 && printf 'build "--remote_header=authorization=Bearer %s"\\n' "$${tcp.tokenEnv}" > ${shellWord(tokenRc)})`,
        `try-import ${rcWord(tokenRc)}`,
      );
    }
  }
  if (o.instance !== undefined) lines.push(rcLine(`--remote_instance_name=${o.instance}`));
  if (o.closures.length > 0) {
    lines.push("# The Nix store paths (with their closures) every action may see; part of each action's cache key.");
    lines.push(rcLine(`--remote_default_exec_properties=nix-closure=${o.closures.join(" ")}`));
  }
  lines.push(
    "# Every call but Execute: long enough for large blobs, short enough to notice a stuck server.",
    rcLine(`--remote_timeout=${BAZEL_REMOTE_TIMEOUT_SECONDS}`),
    "# Keeps the caller's PATH and other variables out of action keys, so results are shared across shells and machines.",
    rcLine("--incompatible_strict_action_env"),
  );
  if (tcp === undefined) {
    lines.push(
      "# Debian's Bazel (bazel-bootstrap, 4.2.3) lacks netty's native epoll library and fails on unix: addresses with",
      '# "Unix domain sockets are unsupported on this platform". Extract libnetty_transport_native_epoll_x86_64.so',
      '# as the README shows ("Using lre with Bazel"), then uncomment:',
      `# startup --host_jvm_args=-Djava.library.path=${join(o.home, ".cache", "netty-epoll")}`,
    );
  } else if (tcp.tls !== undefined) {
    lines.push(
      "# Debian's Bazel (bazel-bootstrap, 4.2.3) cannot open TLS channels on JDK 17 (\"JDK provider does not support",
      '# ALPN protocol"); use an official Bazel release for grpcs://.',
    );
  }
  return lines.join("\n") + "\n";
}

export function buck2Config(o: Buck2ConfigOptions): string {
  const ep = o.endpoint;
  // Buck2 takes grpc:// for TLS too: `tls` decides, and it rejects grpcs://.
  const address = `grpc://${hostPort(ep)}`;
  const digestFlags =
    o.digestFunction === "sha256"
      ? []
      : [o.instance === undefined ? `--digest-function ${o.digestFunction}` : `--instance-digest-function ${o.instance}=${o.digestFunction}`];
  const lines = [
    `# lre: ${serveHint(ep, digestFlags)} (Buck2 speaks only TCP).`,
    "[buck2_re_client]",
    `engine_address = ${address}`,
    `cas_address = ${address}`,
    `action_cache_address = ${address}`,
  ];
  if (ep.tls === undefined) {
    lines.push("# lre's TCP listener is plaintext on loopback; Buck2 assumes TLS unless told otherwise.", "tls = false");
  } else {
    lines.push("# TLS, Buck2's default. Without tls_ca_certs it trusts only the public roots built into Buck2.", "tls = true");
    if (ep.tls.caFile !== undefined) lines.push(`tls_ca_certs = ${ep.tls.caFile}`);
    if (ep.tls.clientCertFile !== undefined) {
      lines.push("# For lre serve --tls-client-ca: this client's certificate and its private key, in one PEM file.", `tls_client_cert = ${ep.tls.clientCertFile}`);
    }
  }
  if (ep.tokenEnv !== undefined) {
    lines.push(
      `# Buck2 replaces $${ep.tokenEnv} with that environment variable when it connects (and fails if it is unset),`,
      "# so the bearer token stays out of this file.",
      `http_headers = authorization: Bearer $${ep.tokenEnv}`,
    );
  }
  if (o.instance !== undefined) lines.push(`instance_name = ${o.instance}`);
  lines.push("", "[buck2]", `digest_algorithms = ${o.digestFunction.toUpperCase()}`);
  return lines.join("\n") + "\n";
}

/** How to start the matching server: on this machine for loopback, on the named host otherwise. */
function serveHint(ep: TcpEndpoint, extra: readonly string[]): string {
  const local = isLoopback(ep.host);
  const listen = local ? hostPort(ep) : `${ep.host.includes(":") ? "[::]" : "0.0.0.0"}:${ep.port}`;
  const flags = [`--tcp ${listen}`];
  if (ep.tls !== undefined) flags.push("--tls-cert FILE --tls-key FILE");
  if (ep.tls?.clientCertFile !== undefined) flags.push("--tls-client-ca FILE");
  if (ep.tokenEnv !== undefined) flags.push("--token-file FILE");
  const command = `"lre serve ${[...flags, ...extra].join(" ")}"`;
  return local ? `start the server with ${command}` : `on ${ep.host}, start the server with ${command}`;
}

/** `host:port`, with an IPv6 host in brackets. */
export function hostPort(ep: { host: string; port: number }): string {
  return `${ep.host.includes(":") ? `[${ep.host}]` : ep.host}:${ep.port}`;
}

/** One `build` line. */
function rcLine(flag: string): string {
  return `build ${rcWord(flag)}`;
}

/** A word with spaces or quotes is double-quoted, as Bazel's rc-file tokenizer expects. */
function rcWord(word: string): string {
  return /[\s"'\\#]/.test(word) ? `"${word.replace(/[\\"]/g, (c) => `\\${c}`)}"` : word;
}

/** A path as one shell word, for the command shown in a comment. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
