import { resolve } from "node:path";
import type { TcpAddress, TcpSecurityConfig } from "../config/config";
import { TokenFileError, loadTokenFile } from "../grpc/auth/token-file";
import type { TokenTable } from "../grpc/auth/token-table";
import { type TlsMaterial, TlsSetupError, loadTls } from "../grpc/tls";
import { CliError } from "./cli-error";
import { isLoopback } from "./loopback";
import { type ParsedFlags, UsageError } from "./parse-args";

/**
 * The TCP listener's protection, from --tls-cert, --tls-key, --tls-client-ca
 * and --token-file (reliability-targets.md H-2). The Unix socket needs none of
 * it: only its owner can open it. Plaintext without tokens is allowed on
 * loopback only, where Buck2 (which cannot use a Unix socket) talks to a local
 * lre; anything reachable from the network must encrypt and must know who is
 * calling, by bearer token or client certificate.
 */
export function tcpSecurityFrom(flags: ParsedFlags, tcp: TcpAddress | undefined): TcpSecurityConfig {
  const certFile = flags.string("tls-cert");
  const keyFile = flags.string("tls-key");
  const clientCaFile = flags.string("tls-client-ca");
  const tokenFile = flags.string("token-file");
  if (tcp === undefined) {
    const stray = [["tls-cert", certFile], ["tls-key", keyFile], ["tls-client-ca", clientCaFile], ["token-file", tokenFile]].find(
      ([, v]) => v !== undefined,
    );
    if (stray !== undefined) {
      throw new UsageError(`--${stray[0]} protects the TCP listener; add --tcp HOST:PORT (the Unix socket needs no credentials)`, "serve");
    }
    return {};
  }
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together: give the certificate chain and its private key", "serve");
  }
  if (clientCaFile !== undefined && certFile === undefined) {
    throw new UsageError("--tls-client-ca needs TLS: add --tls-cert FILE --tls-key FILE", "serve");
  }
  if (!isLoopback(tcp.host)) {
    const where = `--tcp ${tcp.host}:${tcp.port}`;
    if (certFile === undefined) {
      throw new UsageError(
        `${where} is not a loopback address, so lre needs TLS there: add --tls-cert FILE --tls-key FILE, plus --token-file FILE or --tls-client-ca FILE (or listen on 127.0.0.1, ::1 or localhost)`,
        "serve",
      );
    }
    if (tokenFile === undefined && clientCaFile === undefined) {
      throw new UsageError(
        `${where} is not a loopback address, so lre must know who calls: add --token-file FILE (bearer tokens) or --tls-client-ca FILE (client certificates), or both`,
        "serve",
      );
    }
  }
  return {
    ...(certFile === undefined || keyFile === undefined
      ? {}
      : { tls: { certFile: resolve(certFile), keyFile: resolve(keyFile), ...(clientCaFile === undefined ? {} : { clientCaFile: resolve(clientCaFile) }) } }),
    ...(tokenFile === undefined ? {} : { tokenFile: resolve(tokenFile) }),
  };
}

/** Reads the certificate, key, CA and token files named in `c`; any problem is a startup error naming the file (and line). */
export function loadTcpSecurity(c: TcpSecurityConfig): { tls?: TlsMaterial; tokens?: TokenTable } {
  try {
    const tls = c.tls === undefined ? undefined : loadTls(c.tls);
    const tokens = c.tokenFile === undefined ? undefined : loadTokenFile(c.tokenFile);
    return { ...(tls === undefined ? {} : { tls }), ...(tokens === undefined ? {} : { tokens }) };
  } catch (err) {
    if (err instanceof TlsSetupError || err instanceof TokenFileError) throw new CliError(err.message);
    throw err;
  }
}
