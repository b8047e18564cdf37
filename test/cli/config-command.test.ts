import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestCerts, makeTestCerts } from "../support/certs";
import { createClients, grpc, rpcError } from "../support/grpc-client";
import { lre, startServe, stop, tempDir } from "./lre-process";

const env = { XDG_RUNTIME_DIR: "/run/user/1000", HOME: "/home/me" };

const NETTY_COMMENT = [
  "# Debian's Bazel (bazel-bootstrap, 4.2.3) lacks netty's native epoll library and fails on unix: addresses with",
  '# "Unix domain sockets are unsupported on this platform". Extract libnetty_transport_native_epoll_x86_64.so',
  '# as the README shows ("Using lre with Bazel"), then uncomment:',
  "# startup --host_jvm_args=-Djava.library.path=/home/me/.cache/netty-epoll",
];

describe("lre config bazel", () => {
  test("defaults: the default socket, timeouts, strict action env, and the netty note", async () => {
    const r = await lre(["config", "bazel"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      '# lre: start the server with "lre serve", then build as usual.',
      "build --remote_executor=unix:///run/user/1000/lre/lre.sock",
      "# Every call but Execute: long enough for large blobs, short enough to notice a stuck server.",
      "build --remote_timeout=300",
      "# Keeps the caller's PATH and other variables out of action keys, so results are shared across shells and machines.",
      "build --incompatible_strict_action_env",
      ...NETTY_COMMENT,
      "",
    ]);
  });

  test("with a socket, an instance and closures (quoted, since the paths are separated by a space)", async () => {
    const r = await lre(
      ["config", "bazel", "--socket", "/tmp/my lre.sock", "--instance", "team/a", "--closure", "/nix/store/aaa-bash-5.2", "--closure", "/nix/store/bbb-coreutils-9.4"],
      { env },
    );
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      '# lre: start the server with "lre serve --socket /tmp/my lre.sock", then build as usual.',
      'build "--remote_executor=unix:///tmp/my lre.sock"',
      "build --remote_instance_name=team/a",
      "# The Nix store paths (with their closures) every action may see; part of each action's cache key.",
      'build "--remote_default_exec_properties=nix-closure=/nix/store/aaa-bash-5.2 /nix/store/bbb-coreutils-9.4"',
      "# Every call but Execute: long enough for large blobs, short enough to notice a stuck server.",
      "build --remote_timeout=300",
      "# Keeps the caller's PATH and other variables out of action keys, so results are shared across shells and machines.",
      "build --incompatible_strict_action_env",
      ...NETTY_COMMENT,
      "",
    ]);
  });

  test("without XDG_RUNTIME_DIR the socket is under ~/.cache/lre, as lre serve puts it", async () => {
    const r = await lre(["config", "bazel"], { env: { XDG_RUNTIME_DIR: "", HOME: "/home/me" } });
    expect(r.stdout).toContain("build --remote_executor=unix:///home/me/.cache/lre/lre.sock\n");
  });

  test("--tcp on loopback: plaintext grpc://, and no netty note (that is about unix: addresses)", async () => {
    const r = await lre(["config", "bazel", "--tcp", "127.0.0.1:8980"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      '# lre: start the server with "lre serve --tcp 127.0.0.1:8980", then build as usual.',
      "build --remote_executor=grpc://127.0.0.1:8980",
      "# Every call but Execute: long enough for large blobs, short enough to notice a stuck server.",
      "build --remote_timeout=300",
      "# Keeps the caller's PATH and other variables out of action keys, so results are shared across shells and machines.",
      "build --incompatible_strict_action_env",
      "",
    ]);
  });

  test("a LAN server: grpcs://, the CA, a client certificate, and the token through a private rc file, never in this output", async () => {
    const r = await lre(
      [
        "config", "bazel", "--tcp", "build-box.example:8980", "--tls-ca", "/etc/lre/ca.pem",
        "--tls-client-cert", "/etc/lre/me.pem", "--tls-client-key", "/etc/lre/me.key", "--token-env", "LRE_TOKEN", "--instance", "team",
      ],
      { env: { ...env, LRE_TOKEN: "not-to-be-printed-0123456789" } },
    );
    expect(r.exitCode).toBe(0);
    expect(r.stdout).not.toContain("not-to-be-printed");
    expect(r.stdout.split("\n")).toEqual([
      '# lre: on build-box.example, start the server with "lre serve --tcp 0.0.0.0:8980 --tls-cert FILE --tls-key FILE --tls-client-ca FILE --token-file FILE", then build as usual.',
      "build --remote_executor=grpcs://build-box.example:8980",
      "# The CA that signed lre's certificate; without it Bazel trusts only the JDK's public roots.",
      "build --tls_certificate=/etc/lre/ca.pem",
      "# This client's certificate and key, for lre serve --tls-client-ca.",
      "build --tls_client_certificate=/etc/lre/me.pem",
      "build --tls_client_key=/etc/lre/me.key",
      "# The bearer token stays out of this file. Bazel rc files cannot read environment variables, so write the",
      "# header once, from $LRE_TOKEN, to a file only you can read and that is never committed:",
      `#   (umask 077 && printf 'build "--remote_header=authorization=Bearer %s"\\n' "$LRE_TOKEN" > /home/me/.lre-token.bazelrc)`,
      "try-import /home/me/.lre-token.bazelrc",
      "build --remote_instance_name=team",
      "# Every call but Execute: long enough for large blobs, short enough to notice a stuck server.",
      "build --remote_timeout=300",
      "# Keeps the caller's PATH and other variables out of action keys, so results are shared across shells and machines.",
      "build --incompatible_strict_action_env",
      "# Debian's Bazel (bazel-bootstrap, 4.2.3) cannot open TLS channels on JDK 17 (\"JDK provider does not support",
      '# ALPN protocol"); use an official Bazel release for grpcs://.',
      "",
    ]);
  });

  test("--tls alone trusts the JDK's roots; relative files are made absolute, so the rc works from any directory", async () => {
    const cwd = tempDir();
    try {
      const tls = await lre(["config", "bazel", "--tcp", "[fd00::1]:8980", "--tls", "--token-env", "T"], { env });
      expect(tls.stdout).toContain("build --remote_executor=grpcs://[fd00::1]:8980\n");
      expect(tls.stdout).toContain('start the server with "lre serve --tcp [::]:8980 --tls-cert FILE --tls-key FILE --token-file FILE"');
      expect(tls.stdout).not.toContain("--tls_certificate");
      const relative = await lre(["config", "bazel", "--tcp", "localhost:8980", "--tls-ca", "certs/ca.pem"], { env, cwd });
      expect(relative.stdout).toContain(`build --tls_certificate=${join(cwd, "certs", "ca.pem")}\n`);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe("lre config buck2", () => {
  test("defaults: three grpc:// addresses on 127.0.0.1:8980, tls = false, SHA256", async () => {
    const r = await lre(["config", "buck2"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(
      [
        '# lre: start the server with "lre serve --tcp 127.0.0.1:8980" (Buck2 speaks only TCP).',
        "[buck2_re_client]",
        "engine_address = grpc://127.0.0.1:8980",
        "cas_address = grpc://127.0.0.1:8980",
        "action_cache_address = grpc://127.0.0.1:8980",
        "# lre's TCP listener is plaintext on loopback; Buck2 assumes TLS unless told otherwise.",
        "tls = false",
        "",
        "[buck2]",
        "digest_algorithms = SHA256",
        "",
      ].join("\n"),
    );
  });

  test("an instance with BLAKE3: the server hint binds the function to the instance", async () => {
    const r = await lre(["config", "buck2", "--tcp", "[::1]:9000", "--instance", "buck", "--digest-function", "blake3"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(
      [
        '# lre: start the server with "lre serve --tcp [::1]:9000 --instance-digest-function buck=blake3" (Buck2 speaks only TCP).',
        "[buck2_re_client]",
        "engine_address = grpc://[::1]:9000",
        "cas_address = grpc://[::1]:9000",
        "action_cache_address = grpc://[::1]:9000",
        "# lre's TCP listener is plaintext on loopback; Buck2 assumes TLS unless told otherwise.",
        "tls = false",
        "instance_name = buck",
        "",
        "[buck2]",
        "digest_algorithms = BLAKE3",
        "",
      ].join("\n"),
    );
  });

  test("a LAN server: tls = true with the CA, the client certificate, and the token as $VAR in http_headers", async () => {
    const r = await lre(
      [
        "config", "buck2", "--tcp", "build-box.example:8980", "--tls-ca", "/etc/lre/ca.pem", "--tls-client-cert", "/etc/lre/me-and-key.pem",
        "--token-env", "LRE_TOKEN", "--instance", "team",
      ],
      { env: { ...env, LRE_TOKEN: "not-to-be-printed-0123456789" } },
    );
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(
      [
        '# lre: on build-box.example, start the server with "lre serve --tcp 0.0.0.0:8980 --tls-cert FILE --tls-key FILE --tls-client-ca FILE --token-file FILE" (Buck2 speaks only TCP).',
        "[buck2_re_client]",
        "engine_address = grpc://build-box.example:8980",
        "cas_address = grpc://build-box.example:8980",
        "action_cache_address = grpc://build-box.example:8980",
        "# TLS, Buck2's default. Without tls_ca_certs it trusts only the public roots built into Buck2.",
        "tls = true",
        "tls_ca_certs = /etc/lre/ca.pem",
        "# For lre serve --tls-client-ca: this client's certificate and its private key, in one PEM file.",
        "tls_client_cert = /etc/lre/me-and-key.pem",
        "# Buck2 replaces $LRE_TOKEN with that environment variable when it connects (and fails if it is unset),",
        "# so the bearer token stays out of this file.",
        "http_headers = authorization: Bearer $LRE_TOKEN",
        "instance_name = team",
        "",
        "[buck2]",
        "digest_algorithms = SHA256",
        "",
      ].join("\n"),
    );
  });

  test("loopback with a token: still plaintext (tls = false), with the header", async () => {
    const r = await lre(["config", "buck2", "--token-env", "LRE_TOKEN"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe('# lre: start the server with "lre serve --tcp 127.0.0.1:8980 --token-file FILE" (Buck2 speaks only TCP).');
    expect(r.stdout).toContain("\ntls = false\n");
    expect(r.stdout).toContain("\nhttp_headers = authorization: Bearer $LRE_TOKEN\n");
  });

  test("--tls without a CA: tls = true and no tls_ca_certs", async () => {
    const r = await lre(["config", "buck2", "--tcp", "build-box.example:8980", "--tls", "--tls-client-cert", "/etc/lre/me-and-key.pem"], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain("\ntls = true\n");
    expect(r.stdout).not.toContain("\ntls_ca_certs =");
    expect(r.stdout).not.toContain("http_headers");
  });

  test("BLAKE3 without an instance: the server's default function", async () => {
    const r = await lre(["config", "buck2", "--digest-function", "blake3"], { env });
    expect(r.stdout.split("\n")[0]).toBe('# lre: start the server with "lre serve --tcp 127.0.0.1:8980 --digest-function blake3" (Buck2 speaks only TCP).');
  });
});

describe("lre config mistakes exit 2 with usage", () => {
  test.each([
    [["config"], "needs a client: bazel or buck2"],
    [["config", "gradle"], '"gradle" is not a client lre configures'],
    [["config", "bazel", "buck2"], 'unexpected argument "buck2"'],
    [["config", "buck2", "--socket", "/x"], "--socket does not apply to buck2"],
    [["config", "buck2", "--closure", "/nix/store/x"], "--closure does not apply to buck2"],
    [["config", "bazel", "--digest-function", "blake3"], "--digest-function does not apply to bazel"],
    [["config", "bazel", "--closure", "/usr/bin"], 'is not a path under /nix/store'],
    [["config", "buck2", "--tcp", "10.0.0.1:8980"], "--tcp 10.0.0.1:8980 is not a loopback address, and lre serve accepts plaintext only on loopback: add --tls"],
    [["config", "bazel", "--tcp", "10.0.0.1:8980", "--token-env", "T"], "accepts plaintext only on loopback"],
    [["config", "buck2", "--tcp", "10.0.0.1:8980", "--tls-ca", "/ca.pem"], "wants a bearer token or a client certificate: add --token-env NAME or --tls-client-cert FILE"],
    [["config", "bazel", "--socket", "/x", "--tcp", "127.0.0.1:1"], "--socket and --tcp both name the server"],
    [["config", "bazel", "--token-env", "T"], "--token-env is for lre's TCP listener; add --tcp HOST:PORT"],
    [["config", "bazel", "--tls-ca", "/ca.pem"], "--tls-ca is for lre's TCP listener"],
    [["config", "bazel", "--tcp", "127.0.0.1:1", "--tls-client-cert", "/me.pem"], "--tls-client-cert and --tls-client-key go together"],
    [["config", "buck2", "--tls-client-key", "/me.key"], "Buck2 reads the client certificate and its key from one PEM file"],
    [["config", "buck2", "--token-env", "LRE-TOKEN"], '--token-env "LRE-TOKEN" is not an environment variable name'],
    [["config", "buck2", "--token-env", "1TOKEN"], "is not an environment variable name"],
    [["config", "bazel", "--instance", "a/../b"], '--instance: instance name "a/../b" is not valid'],
    [["config", "buck2", "--tcp", "127.0.0.1:0"], "not 0"],
    [["config", "buck2", "--digest-function", "md5"], 'bad value for "--digest-function"'],
  ])("%p", async (args, message) => {
    const r = await lre(args, { env });
    expect(r.exitCode).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain("usage: lre config bazel|buck2 [flags]");
  });
});

/**
 * What the printed settings mean, read the way each client reads them (keys
 * and value syntax from Buck2's buck2_re_configuration and Bazel's flags),
 * used against a real lre serve that wants TLS, a client certificate and a
 * bearer token. A call needing the read scope answering NOT_FOUND shows all
 * three were accepted.
 */
describe("the printed settings get into a real lre serve with TLS, client certificates and tokens", () => {
  const TOKEN = "0123456789abcdef0123456789abcdef";
  let certs: TestCerts;
  let port: number;
  let server: Awaited<ReturnType<typeof startServe>>;
  let dir: string;
  beforeAll(async () => {
    certs = makeTestCerts();
    dir = tempDir();
    writeFileSync(join(dir, "tokens"), `${TOKEN} read\n`);
    server = await startServe([
      "--socket", join(dir, "lre.sock"), "--data-dir", join(dir, "data"), "--tcp", "127.0.0.1:0", "--no-exec",
      "--tls-cert", certs.serverCert, "--tls-key", certs.serverKey, "--tls-client-ca", certs.clientCa, "--token-file", join(dir, "tokens"),
    ]);
    port = Number(/grpcs:\/\/127\.0\.0\.1:(\d+)/.exec(server.banner)?.[1]);
  });
  afterAll(async () => {
    await stop(server);
    rmSync(certs.dir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  interface Settings {
    readonly address: string;
    readonly ca: Buffer;
    readonly key: Buffer;
    readonly cert: Buffer;
    readonly header: readonly [string, string];
  }

  async function expectLetIn(s: Settings): Promise<void> {
    // The certificate names localhost and 127.0.0.1; the settings say localhost.
    expect(s.address).toBe(`localhost:${port}`);
    const c = createClients(s.address, {}, grpc.credentials.createSsl(s.ca, s.key, s.cert));
    try {
      const req = { actionDigest: { hash: "a".repeat(64), sizeBytes: 1 } };
      const md = new grpc.Metadata();
      md.set(s.header[0], s.header[1]);
      expect((await rpcError(c.getActionResult(req, md))).code).toBe(grpc.status.NOT_FOUND);
      // The header is what lets it in.
      expect((await rpcError(c.getActionResult(req))).code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      c.close();
    }
  }

  test("buck2: the addresses, tls_ca_certs, tls_client_cert (certificate and key in one file) and http_headers with $VAR", async () => {
    const both = join(dir, "me-and-key.pem");
    writeFileSync(both, Buffer.concat([certs.read(certs.clientCert), certs.read(certs.clientKey)]));
    const r = await lre(
      ["config", "buck2", "--tcp", `localhost:${port}`, "--tls-ca", certs.serverCa, "--tls-client-cert", both, "--token-env", "LRE_TEST_TOKEN"],
      { env },
    );
    expect(r.exitCode).toBe(0);
    const section = r.stdout.split("[buck2]")[0]!;
    const keys = new Map(
      section
        .split("\n")
        .filter((l) => /^\w+ = /.test(l))
        .map((l) => [l.slice(0, l.indexOf(" = ")), l.slice(l.indexOf(" = ") + 3)] as const),
    );
    expect(keys.get("tls")).toBe("true");
    const addresses = new Set(["engine_address", "cas_address", "action_cache_address"].map((k) => keys.get(k)));
    expect([...addresses]).toEqual([`grpc://localhost:${port}`]);
    // Buck2 splits a header at its first ':' and replaces $NAME from its environment.
    const header = keys.get("http_headers")!;
    const value = header.slice(header.indexOf(":") + 1).trim().replace(/\$([A-Za-z_][A-Za-z0-9_]*)/g, (_, name: string) => ({ LRE_TEST_TOKEN: TOKEN })[name] ?? "");
    const clientPem = readFileSync(keys.get("tls_client_cert")!);
    await expectLetIn({
      address: [...addresses][0]!.slice("grpc://".length),
      ca: readFileSync(keys.get("tls_ca_certs")!),
      key: clientPem,
      cert: clientPem,
      header: [header.slice(0, header.indexOf(":")).trim(), value],
    });
  });

  test("bazel: grpcs://, --tls_certificate, the client certificate and key, and the header from the printed command", async () => {
    const home = join(dir, "home");
    mkdirSync(home);
    const r = await lre(
      [
        "config", "bazel", "--tcp", `localhost:${port}`, "--tls-ca", certs.serverCa,
        "--tls-client-cert", certs.clientCert, "--tls-client-key", certs.clientKey, "--token-env", "LRE_TEST_TOKEN",
      ],
      { env: { ...env, HOME: home } },
    );
    expect(r.exitCode).toBe(0);
    const flags = new Map(
      r.stdout
        .split("\n")
        .filter((l) => l.startsWith("build --"))
        .map((l) => l.slice("build --".length).split("=", 2) as [string, string]),
    );
    // The token file is written by the command shown in the comment, run as the user would.
    const command = r.stdout.split("\n").find((l) => l.startsWith("#   (umask 077"))!.slice("#   ".length);
    const made = Bun.spawnSync(["sh", "-c", command], { env: { ...process.env, HOME: home, LRE_TEST_TOKEN: TOKEN } });
    expect(made.exitCode).toBe(0);
    const tokenRc = r.stdout.split("\n").find((l) => l.startsWith("try-import "))!.slice("try-import ".length);
    expect(tokenRc).toBe(join(home, ".lre-token.bazelrc"));
    expect(statSync(tokenRc).mode & 0o777).toBe(0o600);
    // One quoted word, as Bazel's rc tokenizer needs for a value with a space; --remote_header splits at the first '='.
    const line = readFileSync(tokenRc, "utf8");
    expect(line).toBe(`build "--remote_header=authorization=Bearer ${TOKEN}"\n`);
    const remoteHeader = line.slice('build "--remote_header='.length, -2);
    await expectLetIn({
      address: flags.get("remote_executor")!.replace(/^grpcs:\/\//, ""),
      ca: readFileSync(flags.get("tls_certificate")!),
      key: readFileSync(flags.get("tls_client_key")!),
      cert: readFileSync(flags.get("tls_client_certificate")!),
      header: [remoteHeader.slice(0, remoteHeader.indexOf("=")), remoteHeader.slice(remoteHeader.indexOf("=") + 1)],
    });
    expect(flags.get("remote_executor")).toStartWith("grpcs://");
  });
});
