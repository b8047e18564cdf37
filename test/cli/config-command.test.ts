import { describe, expect, test } from "bun:test";
import { lre } from "./lre-process";

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
    [["config", "bazel", "--tcp", "127.0.0.1:1"], "--tcp does not apply to bazel"],
    [["config", "bazel", "--digest-function", "blake3"], "--digest-function does not apply to bazel"],
    [["config", "bazel", "--closure", "/usr/bin"], 'is not a path under /nix/store'],
    [["config", "buck2", "--tcp", "10.0.0.1:8980"], "is not a loopback address"],
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
