import { readFileSync } from "node:fs";
import * as tls from "node:tls";

/**
 * TLS for the TCP listener. lre terminates TLS itself with node:tls and hands
 * the decrypted bytes to the same HTTP/2 shim as plaintext connections
 * (unix-listener.ts); grpc-js's own TLS server is not used because Bun's
 * http2 would then own the socket and skip the shim.
 */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** CA certificates client certificates must chain to; setting it makes client certificates mandatory. */
  readonly clientCaFile?: string;
}

/** The PEM contents of TlsFiles, checked to load. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly clientCa?: Buffer;
}

export class TlsSetupError extends Error {
  override readonly name = "TlsSetupError";
}

/** Reads the files and makes sure they form a usable server identity, so mistakes show at startup rather than at the first handshake. */
export function loadTls(files: TlsFiles): TlsMaterial {
  const cert = readPem(files.certFile, "--tls-cert");
  const key = readPem(files.keyFile, "--tls-key");
  const clientCa = files.clientCaFile === undefined ? undefined : readPem(files.clientCaFile, "--tls-client-ca");
  const material: TlsMaterial = { cert, key, ...(clientCa === undefined ? {} : { clientCa }) };
  try {
    tls.createSecureContext(tlsServerOptions(material));
  } catch (err) {
    const which = clientCa === undefined ? `"${files.certFile}" and "${files.keyFile}"` : `"${files.certFile}", "${files.keyFile}" and "${files.clientCaFile}"`;
    throw new TlsSetupError(
      `cannot use ${which} for TLS (PEM certificate chain, its private key, client CA certificates): ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  return material;
}

/** Options for tls.createServer: HTTP/2 only, TLS 1.2 or later, and client certificates checked when a client CA is set. */
export function tlsServerOptions(m: TlsMaterial): tls.TlsOptions {
  return {
    cert: m.cert,
    key: m.key,
    ALPNProtocols: ["h2"],
    minVersion: "TLSv1.2",
    ...(m.clientCa === undefined ? {} : { ca: m.clientCa, requestCert: true, rejectUnauthorized: true }),
  };
}

function readPem(path: string, flag: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    throw new TlsSetupError(`${flag}: cannot read "${path}": ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!data.includes("-----BEGIN ")) throw new TlsSetupError(`${flag}: "${path}" is not a PEM file (no "-----BEGIN" line)`);
  return data;
}
