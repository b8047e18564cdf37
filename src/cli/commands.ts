import { LOG_LEVELS } from "../config/config";
import {
  DEFAULT_ACTION_TIMEOUT_SECONDS,
  DEFAULT_CACHE_CAP_BYTES,
  DEFAULT_CACHE_FREE_FRACTION,
  DEFAULT_GRACE_SECONDS,
  MAX_ACTION_TIMEOUT_SECONDS,
} from "../config/defaults";
import { formatDuration, parseDuration } from "../config/duration";
import { formatSize, parseSize } from "../config/size";
import { DEFAULT_PROTECT_MS } from "../cas/size-bounded-blob-store";
import { DIGEST_FUNCTIONS } from "../digest/digest";
import type { CommandSpec, FlagSpec, FlagValue } from "./parse-args";

/** The command-line surface of lre: every command and flag, with the text --help shows. */

const socketFlag: FlagSpec = {
  name: "socket",
  kind: "string",
  metavar: "PATH",
  help: "Unix socket to listen on (created 0600 in a 0700 directory)",
  defaultText: "$XDG_RUNTIME_DIR/lre/lre.sock, else ~/.cache/lre/lre.sock",
};

const dataDirFlag: FlagSpec = {
  name: "data-dir",
  kind: "string",
  metavar: "DIR",
  help: "directory holding the CAS and action cache (LMDB)",
  defaultText: "~/.cache/lre",
};

const digestChoices = [...DIGEST_FUNCTIONS];

/**
 * The eviction protection window. Bazel's build without the bytes and Buck2
 * assume a blob they saw survives 3 h after its last use (reliability-targets
 * §4), so this is a flag to lengthen or, knowingly, shorten that promise.
 */
function protectForFlag(help: string, defaultText = formatDuration(DEFAULT_PROTECT_MS)): FlagSpec {
  return { name: "protect-for", kind: "duration", metavar: "DURATION", help, defaultText };
}

/** gc and import run beside or after a server, so they keep what it keeps unless told otherwise. */
const SERVED_PROTECT_FOR = `the --protect-for of the last lre serve on this data dir, else ${formatDuration(DEFAULT_PROTECT_MS)}`;

export const SERVE: CommandSpec = {
  name: "serve",
  summary: "run the REAPI server (CAS, action cache, execution)",
  flags: [
    socketFlag,
    dataDirFlag,
    {
      name: "tcp",
      kind: "host-port",
      metavar: "HOST:PORT",
      help: "also listen on TCP, e.g. 127.0.0.1:8980 (Buck2 needs TCP; port 0 picks a free port). Plaintext without tokens only on loopback; any other address needs --tls-cert/--tls-key plus --token-file or --tls-client-ca",
      defaultText: "off",
    },
    { name: "tls-cert", kind: "string", metavar: "FILE", help: "PEM certificate chain to serve TLS with on the TCP listener (clients then use grpcs://); needs --tls-key" },
    { name: "tls-key", kind: "string", metavar: "FILE", help: "PEM private key of --tls-cert" },
    {
      name: "tls-client-ca",
      kind: "string",
      metavar: "FILE",
      help: "PEM CA certificates: TCP clients must present a certificate signed by one of them (mutual TLS)",
    },
    {
      name: "token-file",
      kind: "string",
      metavar: "FILE",
      help: "bearer tokens TCP clients must send as authorization: Bearer TOKEN, one per line as TOKEN SCOPE[,SCOPE...] with scopes read, write, execute (# comments); the Unix socket needs none",
    },
    {
      name: "max-cache-size",
      kind: "size",
      metavar: "SIZE",
      help: "evict least recently used blobs beyond this size, e.g. 20GiB or 500MB (K/M/G/T and KiB.. are powers of 1024, KB/MB/GB/TB of 1000)",
      defaultText: `${DEFAULT_CACHE_FREE_FRACTION * 100}% of the free space on the data dir's filesystem, at most ${formatSize(DEFAULT_CACHE_CAP_BYTES)}`,
    },
    protectForFlag(
      "never evict a blob used within DURATION, e.g. 3h, 90m, 1d, or 0 to evict by last use alone. Bazel (build without the bytes) and Buck2 assume a blob lives 3h after they last saw it; a shorter window can fail their builds with missing blobs, and when only protected blobs are left, uploads fail RESOURCE_EXHAUSTED until one ages out",
    ),
    {
      name: "digest-function",
      kind: "choice",
      metavar: "FN",
      choices: digestChoices,
      help: "digest function for requests that do not name one",
      defaultText: "sha256",
    },
    {
      name: "instance-digest-function",
      kind: "assignment",
      metavar: "INSTANCE=FN",
      choices: digestChoices,
      repeatable: true,
      help: "digest function for one instance name, for clients that never name one (Buck2); repeatable",
    },
    { name: "jobs", kind: "int", metavar: "N", help: "actions to run at once", defaultText: "number of CPU cores" },
    {
      name: "closure",
      kind: "string",
      metavar: "STOREPATH",
      repeatable: true,
      help: "Nix store path (already in the store) whose closure actions see when they set no nix-closure platform property, besides store paths their argv or environment names; repeatable",
    },
    {
      name: "action-timeout",
      kind: "seconds",
      metavar: "SECONDS",
      help: "timeout for actions that set none",
      defaultText: String(DEFAULT_ACTION_TIMEOUT_SECONDS),
    },
    {
      name: "max-action-timeout",
      kind: "seconds",
      metavar: "SECONDS",
      help: "reject actions asking for a longer timeout",
      defaultText: String(MAX_ACTION_TIMEOUT_SECONDS),
    },
    { name: "no-exec", kind: "bool", help: "serve as a cache only (no remote execution)" },
    {
      name: "upstream",
      kind: "string",
      metavar: "URL",
      help: "front another REAPI server (grpc://HOST:PORT, grpcs://HOST:PORT or unix:///PATH): local misses are fetched from it, local writes uploaded to it in the background from a queue that survives restarts",
      defaultText: "none",
    },
    { name: "upstream-ca", kind: "string", metavar: "FILE", help: "PEM CA certificates to check a grpcs:// upstream against", defaultText: "system roots" },
    { name: "upstream-token-file", kind: "string", metavar: "FILE", help: "file holding a token sent to the upstream as authorization: Bearer TOKEN" },
    { name: "upstream-instance", kind: "string", metavar: "NAME", help: "instance name to use on the upstream", defaultText: "the request's own" },
    {
      name: "execute-upstream",
      kind: "choice",
      metavar: "WHEN",
      choices: ["never", "fallback", "always"],
      help: "send Execute to the upstream: never; always; or fallback, running locally when the upstream is down or answers UNAVAILABLE/UNIMPLEMENTED before its first operation",
      defaultText: "never",
    },
    {
      name: "grace",
      kind: "seconds",
      metavar: "SECONDS",
      help: "on SIGINT/SIGTERM, time running work gets to finish before it is cut off",
      defaultText: String(DEFAULT_GRACE_SECONDS),
    },
    {
      name: "log-level",
      kind: "choice",
      metavar: "LEVEL",
      choices: [...LOG_LEVELS],
      help: "least severe messages written to stderr",
      defaultText: "info",
    },
  ],
};

export const DOCTOR: CommandSpec = {
  name: "doctor",
  summary: "check this machine can run lre serve, and say how to fix what is missing",
  flags: [socketFlag, dataDirFlag],
};

export const GC: CommandSpec = {
  name: "gc",
  summary: "evict least recently used blobs until the cache is at most SIZE",
  flags: [
    { name: "to", kind: "size", metavar: "SIZE", help: "target size of the cache, e.g. 10GiB (required); missed if only protected blobs remain" },
    protectForFlag("keep blobs used within DURATION even if that misses --to; 0 evicts by last use alone (see lre serve --protect-for)", SERVED_PROTECT_FOR),
    dataDirFlag,
  ],
};

export const STATS: CommandSpec = {
  name: "stats",
  summary: "show cache size, blob and action-cache counts, hit rate, and the running executor's queue",
  flags: [
    dataDirFlag,
    {
      name: "max-cache-size",
      kind: "size",
      metavar: "SIZE",
      help: "cache limit to report the size against",
      defaultText: "the --max-cache-size of the last lre serve on this data dir",
    },
    {
      name: "json",
      kind: "bool",
      help: "print one JSON object instead of text (maxBytes null when no limit is known; protectMs the protection window in force, protectRecorded false when it is the default because no lre serve recorded one)",
    },
  ],
};

export const EXPORT: CommandSpec = {
  name: "export",
  operands: "FILE",
  summary: "write blobs and action results to one bundle FILE, to import on another machine (works beside a running server)",
  flags: [
    dataDirFlag,
    {
      name: "since",
      kind: "string",
      metavar: "DURATION",
      help: "only blobs used and action results used or added within DURATION, e.g. 30m, 2h, 7d, 1w",
      defaultText: "everything",
    },
    {
      name: "action",
      kind: "string",
      metavar: "DIGEST",
      help: "only the result of the action HASH/SIZE, with every blob it needs and its Action, Command and input tree",
    },
  ],
};

export const IMPORT: CommandSpec = {
  name: "import",
  operands: "FILE",
  summary: "add a bundle written by lre export; verified whole before anything is added (works beside a running server)",
  flags: [
    dataDirFlag,
    {
      name: "max-cache-size",
      kind: "size",
      metavar: "SIZE",
      help: "cache size to respect while adding blobs",
      defaultText: "the --max-cache-size of the last lre serve on this data dir, else as for lre serve",
    },
    protectForFlag("blobs used within DURATION are never evicted to make room", SERVED_PROTECT_FOR),
    {
      name: "trust-origin",
      kind: "bool",
      help: "keep the origin the bundle claims for each action result (run by lre, or uploaded by a client); without it all are recorded as client uploads, since anyone can write a bundle",
    },
  ],
};

export const CONFIG: CommandSpec = {
  name: "config",
  operands: "bazel|buck2",
  summary: "print the client configuration for lre: .bazelrc lines (bazel) or a .buckconfig section (buck2)",
  flags: [
    {
      name: "socket",
      kind: "string",
      metavar: "PATH",
      help: "bazel: the Unix socket lre serve listens on",
      defaultText: "$XDG_RUNTIME_DIR/lre/lre.sock, else ~/.cache/lre/lre.sock",
    },
    {
      name: "tcp",
      kind: "host-port",
      metavar: "HOST:PORT",
      help: "the TCP listener of lre serve --tcp as the client reaches it (bazel: instead of the Unix socket). A host other than loopback needs --tls and --token-env or --tls-client-cert, as lre serve does",
      defaultText: "buck2: 127.0.0.1:8980",
    },
    { name: "tls", kind: "bool", help: "lre serve has --tls-cert/--tls-key: connect with TLS (bazel: grpcs://, buck2: tls = true)" },
    {
      name: "tls-ca",
      kind: "string",
      metavar: "FILE",
      help: "PEM CA certificates that signed lre's certificate (bazel: --tls_certificate, buck2: tls_ca_certs); implies --tls",
      defaultText: "the client's public roots",
    },
    {
      name: "tls-client-cert",
      kind: "string",
      metavar: "FILE",
      help: "PEM client certificate, for lre serve --tls-client-ca (bazel: with --tls-client-key; buck2: the certificate and its key in this one file); implies --tls",
    },
    { name: "tls-client-key", kind: "string", metavar: "FILE", help: "bazel: PEM private key of --tls-client-cert" },
    {
      name: "token-env",
      kind: "string",
      metavar: "NAME",
      help: "environment variable holding a bearer token of lre serve --token-file when the client runs; the config names the variable, never the token (buck2: http_headers; bazel: a try-import of a private rc file)",
    },
    { name: "instance", kind: "string", metavar: "NAME", help: "remote instance name", defaultText: "none (the empty instance)" },
    {
      name: "closure",
      kind: "string",
      metavar: "STOREPATH",
      repeatable: true,
      help: "bazel: Nix store path every action declares as its toolchain (nix-closure platform property); repeatable",
    },
    {
      name: "digest-function",
      kind: "choice",
      metavar: "FN",
      choices: digestChoices,
      help: "buck2: digest function Buck2 uses (lre serve must use the same for this instance)",
      defaultText: "sha256",
    },
  ],
};

export const VERSION: CommandSpec = { name: "version", summary: "print the version", flags: [] };

export const HELP: CommandSpec = { name: "help", summary: "show help for lre or one command", flags: [] };

export const COMMANDS: readonly CommandSpec[] = [SERVE, DOCTOR, GC, STATS, EXPORT, IMPORT, CONFIG, VERSION, HELP];

/** Turns a raw flag value into its typed form; throws with a message saying what is accepted. */
export function convertFlag(spec: FlagSpec, raw: string): FlagValue {
  switch (spec.kind) {
    case "bool":
      return true;
    case "string":
      if (raw === "") throw new RangeError("the value is empty");
      return raw;
    case "size": {
      const bytes = parseSize(raw);
      if (bytes <= 0) throw new RangeError(`size must be more than zero, not "${raw}"`);
      return bytes;
    }
    case "int": {
      if (!/^\d+$/.test(raw) || Number(raw) < 1 || !Number.isSafeInteger(Number(raw))) {
        throw new RangeError(`"${raw}" is not a whole number of at least 1`);
      }
      return Number(raw);
    }
    case "seconds": {
      if (!/^\d+(\.\d+)?$/.test(raw)) throw new RangeError(`"${raw}" is not a number of seconds`);
      return Number(raw);
    }
    case "duration":
      return parseDuration(raw, { allowZero: true });
    case "host-port":
      return parseHostPort(raw);
    case "choice":
      return checkChoice(spec, raw);
    case "assignment": {
      const eq = raw.lastIndexOf("=");
      if (eq <= 0) throw new RangeError(`"${raw}" is not of the form ${spec.metavar ?? "NAME=VALUE"}`);
      return [raw.slice(0, eq), checkChoice(spec, raw.slice(eq + 1))];
    }
  }
}

function checkChoice(spec: FlagSpec, raw: string): string {
  const choices = spec.choices ?? [];
  if (!choices.includes(raw)) throw new RangeError(`"${raw}" is not one of ${choices.join(", ")}`);
  return raw;
}

/** `HOST:PORT` or `[IPV6]:PORT`; port 0 asks the kernel for a free one. */
export function parseHostPort(raw: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(raw);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (m === null || host === undefined || !Number.isInteger(port) || port > 65535) {
    throw new RangeError(`"${raw}" is not HOST:PORT (for example 127.0.0.1:8980, or [::1]:8980)`);
  }
  return { host, port };
}
