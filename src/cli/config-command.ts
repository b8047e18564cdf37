import { resolve } from "node:path";
import type { Environment } from "../config/defaults";
import type { DigestFn } from "../digest/digest";
import { parseInstanceName } from "../digest/instance-name";
import { type ClientTls, DEFAULT_BUCK2_ADDRESS, type TcpEndpoint, bazelConfig, buck2Config, hostPort } from "./client-config";
import { isLoopback } from "./loopback";
import { type ParsedFlags, UsageError } from "./parse-args";
import { socketPathFrom } from "./serve-config";

/**
 * `lre config bazel|buck2`: checks the flags describe a server lre serve
 * could be (plaintext only on loopback; elsewhere TLS plus a token or a
 * client certificate) and prints the matching client configuration.
 */

const BAZEL_ONLY = ["socket", "closure", "tls-client-key"];
const BUCK2_ONLY = ["digest-function"];
/** A shell-style variable name: what Buck2 substitutes in `$NAME`. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function runConfig(operands: readonly string[], flags: ParsedFlags, e: Environment, out: (text: string) => void): number {
  const [client, ...extra] = operands;
  if (client === undefined) throw new UsageError('"lre config" needs a client: bazel or buck2', "config");
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" for "lre config ${client}"`, "config");
  if (client !== "bazel" && client !== "buck2") throw new UsageError(`"${client}" is not a client lre configures; use bazel or buck2`, "config");
  const foreign = (client === "bazel" ? BUCK2_ONLY : BAZEL_ONLY).find((f) => flags.has(f));
  if (foreign === "tls-client-key") {
    throw new UsageError(
      "--tls-client-key does not apply to buck2: Buck2 reads the client certificate and its key from one PEM file; concatenate them (cat me.pem me.key > me-and-key.pem) and pass --tls-client-cert me-and-key.pem",
      "config",
    );
  }
  if (foreign !== undefined) throw new UsageError(`--${foreign} does not apply to ${client}`, "config");
  const instance = instanceFrom(flags);

  if (client === "bazel") {
    const closures = flags.strings("closure");
    for (const c of closures) {
      if (!c.startsWith("/nix/store/")) throw new UsageError(`--closure "${c}" is not a path under /nix/store`, "config");
    }
    if (flags.has("socket") && flags.has("tcp")) {
      throw new UsageError("--socket and --tcp both name the server: give --socket for lre on this machine, --tcp HOST:PORT for its TCP listener", "config");
    }
    const endpoint = flags.has("tcp") ? tcpEndpointFrom(flags, "bazel") : unixOnly(flags, e);
    out(bazelConfig({ endpoint, closures, home: e.home, ...(instance === undefined ? {} : { instance }) }));
    return 0;
  }
  out(
    buck2Config({
      endpoint: tcpEndpointFrom(flags, "buck2"),
      digestFunction: (flags.string("digest-function") ?? "sha256") as DigestFn,
      ...(instance === undefined ? {} : { instance }),
    }),
  );
  return 0;
}

function instanceFrom(flags: ParsedFlags): string | undefined {
  const instance = flags.string("instance");
  if (instance === undefined) return undefined;
  try {
    return parseInstanceName(instance);
  } catch (err) {
    throw new UsageError(`--instance: ${err instanceof Error ? err.message : String(err)}`, "config");
  }
}

/** The Unix socket: TLS and tokens protect only the TCP listener, so they make no sense here. */
function unixOnly(flags: ParsedFlags, e: Environment): { socketPath: string; customSocket: boolean } {
  const tcpOnly = ["tls", "tls-ca", "tls-client-cert", "tls-client-key", "token-env"].find((f) => flags.has(f));
  if (tcpOnly !== undefined) {
    throw new UsageError(`--${tcpOnly} is for lre's TCP listener; add --tcp HOST:PORT (the Unix socket needs no credentials)`, "config");
  }
  return { socketPath: socketPathFrom(flags, e), customSocket: flags.has("socket") };
}

/** The TCP listener as the client reaches it, refused unless lre serve would listen that way. */
function tcpEndpointFrom(flags: ParsedFlags, client: "bazel" | "buck2"): TcpEndpoint {
  const tcp = flags.hostPort("tcp") ?? DEFAULT_BUCK2_ADDRESS;
  const where = `--tcp ${hostPort(tcp)}`;
  if (tcp.port === 0) throw new UsageError("--tcp needs the port lre serve actually listens on, not 0", "config");
  const caFile = flags.string("tls-ca");
  const clientCertFile = flags.string("tls-client-cert");
  const clientKeyFile = flags.string("tls-client-key");
  if (client === "bazel" && (clientCertFile === undefined) !== (clientKeyFile === undefined)) {
    throw new UsageError("--tls-client-cert and --tls-client-key go together for bazel: give the certificate and its private key", "config");
  }
  const useTls = flags.bool("tls") || caFile !== undefined || clientCertFile !== undefined;
  const tokenEnv = flags.string("token-env");
  if (tokenEnv !== undefined && !ENV_NAME.test(tokenEnv)) {
    throw new UsageError(`--token-env "${tokenEnv}" is not an environment variable name (letters, digits and _, not starting with a digit)`, "config");
  }
  if (!isLoopback(tcp.host)) {
    if (!useTls) {
      throw new UsageError(
        `${where} is not a loopback address, and lre serve accepts plaintext only on loopback: add --tls (with --tls-ca FILE unless a public CA signed lre's certificate)`,
        "config",
      );
    }
    if (tokenEnv === undefined && clientCertFile === undefined) {
      throw new UsageError(
        `${where} is not a loopback address, so lre serve there wants a bearer token or a client certificate: add --token-env NAME or --tls-client-cert FILE`,
        "config",
      );
    }
  }
  // Absolute, so the config works whatever directory the client starts in.
  const tls: ClientTls | undefined = useTls
    ? {
        ...(caFile === undefined ? {} : { caFile: resolve(caFile) }),
        ...(clientCertFile === undefined ? {} : { clientCertFile: resolve(clientCertFile) }),
        ...(clientKeyFile === undefined ? {} : { clientKeyFile: resolve(clientKeyFile) }),
      }
    : undefined;
  return { host: tcp.host, port: tcp.port, ...(tls === undefined ? {} : { tls }), ...(tokenEnv === undefined ? {} : { tokenEnv }) };
}
