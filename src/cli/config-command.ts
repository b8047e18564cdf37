import { join } from "node:path";
import type { Environment } from "../config/defaults";
import type { DigestFn } from "../digest/digest";
import { type ParsedFlags, UsageError } from "./parse-args";
import { isLoopback, socketPathFrom } from "./serve-config";

/**
 * `lre config bazel|buck2`: the client settings that match how lre serves,
 * printed for the user to paste (`lre config bazel >> .bazelrc`).
 */

export interface BazelConfigOptions {
  readonly socketPath: string;
  /** Whether --socket was given, so the hint to start the server names it too. */
  readonly customSocket: boolean;
  readonly instance?: string;
  readonly closures: readonly string[];
  /** Home directory, for the suggested netty library path. */
  readonly home: string;
}

export interface Buck2ConfigOptions {
  readonly host: string;
  readonly port: number;
  readonly instance?: string;
  readonly digestFunction: DigestFn;
}

/** Timeout for every RPC but Execute (which Bazel never times out): room for large blobs, still finite. */
export const BAZEL_REMOTE_TIMEOUT_SECONDS = 300;

export const DEFAULT_BUCK2_ADDRESS = { host: "127.0.0.1", port: 8980 } as const;

export function bazelConfig(o: BazelConfigOptions): string {
  const lines = [
    `# lre: start the server with "lre serve${o.customSocket ? ` --socket ${o.socketPath}` : ""}", then build as usual.`,
    rcLine(`--remote_executor=unix://${o.socketPath}`),
  ];
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
    "# Debian's Bazel (bazel-bootstrap, 4.2.3) lacks netty's native epoll library and fails on unix: addresses with",
    '# "Unix domain sockets are unsupported on this platform". Extract libnetty_transport_native_epoll_x86_64.so',
    '# as the README shows ("Using lre with Bazel"), then uncomment:',
    `# startup --host_jvm_args=-Djava.library.path=${join(o.home, ".cache", "netty-epoll")}`,
  );
  return lines.join("\n") + "\n";
}

export function buck2Config(o: Buck2ConfigOptions): string {
  const address = `grpc://${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;
  const hostPort = address.slice("grpc://".length);
  const serveFlags = [`--tcp ${hostPort}`];
  if (o.digestFunction !== "sha256") {
    serveFlags.push(o.instance === undefined ? `--digest-function ${o.digestFunction}` : `--instance-digest-function ${o.instance}=${o.digestFunction}`);
  }
  const lines = [
    `# lre: start the server with "lre serve ${serveFlags.join(" ")}" (Buck2 speaks only TCP).`,
    "[buck2_re_client]",
    `engine_address = ${address}`,
    `cas_address = ${address}`,
    `action_cache_address = ${address}`,
    "# lre's TCP listener is plaintext on loopback; Buck2 assumes TLS unless told otherwise.",
    "tls = false",
  ];
  if (o.instance !== undefined) lines.push(`instance_name = ${o.instance}`);
  lines.push("", "[buck2]", `digest_algorithms = ${o.digestFunction.toUpperCase()}`);
  return lines.join("\n") + "\n";
}

const BAZEL_ONLY = ["socket", "closure"];
const BUCK2_ONLY = ["tcp", "digest-function"];

export function runConfig(operands: readonly string[], flags: ParsedFlags, e: Environment, out: (text: string) => void): number {
  const [client, ...extra] = operands;
  if (client === undefined) throw new UsageError('"lre config" needs a client: bazel or buck2', "config");
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" for "lre config ${client}"`, "config");
  if (client !== "bazel" && client !== "buck2") throw new UsageError(`"${client}" is not a client lre configures; use bazel or buck2`, "config");
  const foreign = (client === "bazel" ? BUCK2_ONLY : BAZEL_ONLY).find((f) => flags.has(f));
  if (foreign !== undefined) throw new UsageError(`--${foreign} does not apply to ${client}`, "config");
  const instance = flags.string("instance");
  if (client === "bazel") {
    const closures = flags.strings("closure");
    for (const c of closures) {
      if (!c.startsWith("/nix/store/")) throw new UsageError(`--closure "${c}" is not a path under /nix/store`, "config");
    }
    out(bazelConfig({ socketPath: socketPathFrom(flags, e), customSocket: flags.has("socket"), closures, home: e.home, ...(instance === undefined ? {} : { instance }) }));
    return 0;
  }
  const tcp = flags.hostPort("tcp") ?? DEFAULT_BUCK2_ADDRESS;
  if (!isLoopback(tcp.host)) {
    throw new UsageError(`--tcp ${tcp.host}:${tcp.port} is not a loopback address; lre serve --tcp only listens on 127.0.0.1, ::1 or localhost`, "config");
  }
  if (tcp.port === 0) throw new UsageError("--tcp needs the port lre serve actually listens on, not 0", "config");
  out(buck2Config({ host: tcp.host, port: tcp.port, digestFunction: (flags.string("digest-function") ?? "sha256") as DigestFn, ...(instance === undefined ? {} : { instance }) }));
  return 0;
}

/** One `build` line; a token with spaces or quotes is double-quoted, as Bazel's rc-file tokenizer expects. */
function rcLine(flag: string): string {
  return `build ${/[\s"'\\#]/.test(flag) ? `"${flag.replace(/[\\"]/g, (c) => `\\${c}`)}"` : flag}`;
}
