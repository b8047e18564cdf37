import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Real X.509 material made with the openssl CLI, as a user would make it:
 * two independent CAs ("server" and "other"), a client CA, a server
 * certificate for 127.0.0.1/localhost and client certificates from the client
 * CA and from the unrelated one. Paths are PEM files in a fresh temp dir.
 */
export interface TestCerts {
  readonly dir: string;
  readonly serverCa: string;
  readonly serverCert: string;
  readonly serverKey: string;
  /** A CA that signed nothing we serve: clients trusting only it must refuse the server. */
  readonly otherCa: string;
  readonly clientCa: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A client certificate signed by otherCa, not by clientCa. */
  readonly strangerCert: string;
  readonly strangerKey: string;
  read(path: string): Buffer;
}

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
}

function selfSignedCa(dir: string, name: string): void {
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-keyout", `${name}.key`, "-out", `${name}.pem`], dir);
}

function leaf(dir: string, name: string, ca: string, ext: string): void {
  openssl(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`], dir);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial", "-days", "2",
    "-extfile", `${name}.ext`, "-out", `${name}.pem`], dir);
}

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "lre-certs-"));
  for (const ca of ["server-ca", "other-ca", "client-ca"]) selfSignedCa(dir, ca);
  leaf(dir, "server", "server-ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  leaf(dir, "client", "client-ca", "extendedKeyUsage=clientAuth\n");
  leaf(dir, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
  const p = (f: string) => join(dir, f);
  return {
    dir,
    serverCa: p("server-ca.pem"),
    serverCert: p("server.pem"),
    serverKey: p("server.key"),
    otherCa: p("other-ca.pem"),
    clientCa: p("client-ca.pem"),
    clientCert: p("client.pem"),
    clientKey: p("client.key"),
    strangerCert: p("stranger.pem"),
    strangerKey: p("stranger.key"),
    read: (path) => readFileSync(path),
  };
}
