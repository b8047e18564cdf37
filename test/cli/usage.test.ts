import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { COMMANDS, parseHostPort } from "../../src/cli/commands";
import { cliReference, commandUsage, fullHelp } from "../../src/cli/usage";
import { formatDuration, parseDuration } from "../../src/config/duration";
import { parseSize } from "../../src/config/size";
import { REPO, lre } from "./lre-process";

describe("lre command line", () => {
  test("no command prints usage on stderr and exits 2", async () => {
    const r = await lre([]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("usage: lre <command>");
    expect(r.stdout).toBe("");
  });

  test.each([
    [["frobnicate"], 'unknown command "frobnicate"'],
    [["--frobnicate"], 'unknown flag "--frobnicate"'],
    [["serve", "--frobnicate"], 'unknown flag "--frobnicate" for "lre serve"'],
    [["serve", "extra"], 'unexpected argument "extra"'],
    [["serve", "--socket"], 'flag "--socket" needs a value'],
    [["serve", "--max-cache-size", "lots"], '"lots" is not a size'],
    [["serve", "--max-cache-size", "0"], "size must be more than zero"],
    [["serve", "--tcp", "localhost"], '"localhost" is not HOST:PORT'],
    [["serve", "--tcp", "127.0.0.1:70000"], "is not HOST:PORT"],
    [["serve", "--tcp", "0.0.0.0:8980"], "is not a loopback address"],
    [["serve", "--tcp", "192.168.1.10:8980"], "needs TLS there: add --tls-cert FILE --tls-key FILE"],
    [["serve", "--tcp", "0.0.0.0:8980", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "add --token-file FILE (bearer tokens) or --tls-client-ca FILE"],
    [["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "--tls-cert protects the TCP listener; add --tcp HOST:PORT"],
    [["serve", "--token-file", "t"], "--token-file protects the TCP listener"],
    [["serve", "--tcp", "127.0.0.1:0", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"],
    [["serve", "--tcp", "127.0.0.1:0", "--tls-client-ca", "ca.pem"], "--tls-client-ca needs TLS"],
    [["serve", "--jobs", "0"], '"0" is not a whole number of at least 1'],
    [["serve", "--jobs", "two"], '"two" is not a whole number'],
    [["serve", "--log-level", "loud"], '"loud" is not one of error, warn, info, debug'],
    [["serve", "--digest-function", "md5"], '"md5" is not one of sha256, blake3'],
    [["serve", "--grace", "-1"], "is not a number of seconds"],
    [["serve", "--closure", "/usr/bin"], '--closure "/usr/bin" is not a Nix store path'],
    [["serve", "--closure", "/nix/store/garbage"], '--closure "/nix/store/garbage" is not a Nix store path'],
    [["serve", "--closure", "/nix/store/abc-../x"], '--closure "/nix/store/abc-../x" is not a Nix store path'],
    [["serve", "--action-timeout", "100", "--max-action-timeout", "10"], "is more than --max-action-timeout"],
    [["serve", "--data-dir", "a", "--data-dir", "b"], "given more than once"],
    [["serve", "--protect-for", "3 hours"], 'bad value for "--protect-for": "3 hours" is not a duration such as 30m, 2h'],
    [["serve", "--protect-for", "-1h"], "or 0 for none"],
    [["gc", "--to", "1G", "--protect-for", "3"], 'bad value for "--protect-for": "3" is not a duration'],
    [["import", "x.lrebundle", "--protect-for", ""], 'bad value for "--protect-for"'],
    [["gc"], "needs --to SIZE"],
    [["gc", "--to", "1.5.5G"], "is not a size"],
    [["stats", "--json=yes"], "takes no value"],
  ])("%p is a usage error: exit 2 with a message and usage on stderr", async (args, message) => {
    const r = await lre(args);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain("usage: lre");
    expect(r.stdout).toBe("");
  });

  test("--version and version print the same version line", async () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string };
    const a = await lre(["--version"]);
    const b = await lre(["version"]);
    expect(a.exitCode).toBe(0);
    expect(a.stdout).toStartWith(`lre ${pkg.version} `);
    expect(b.stdout).toBe(a.stdout);
  });

  test("--help and help COMMAND go to stdout with exit 0", async () => {
    const top = await lre(["--help"]);
    expect(top.exitCode).toBe(0);
    for (const c of COMMANDS) expect(top.stdout).toContain(c.name);
    const serve = await lre(["help", "serve"]);
    expect(serve.stdout).toBe(commandUsage(COMMANDS.find((c) => c.name === "serve")!));
    const flagHelp = await lre(["serve", "--help"]);
    expect(flagHelp.stdout).toBe(serve.stdout);
  });

  test("help lists every flag of every command, with its default where it has one", () => {
    const help = fullHelp();
    for (const c of COMMANDS) {
      const usage = commandUsage(c);
      for (const f of c.flags) {
        expect(usage).toContain(`--${f.name}`);
        if (f.defaultText !== undefined) expect(usage).toContain(f.defaultText);
        expect(help).toContain(`--${f.name}`);
      }
    }
  });

  test("README documents every command and every flag", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    for (const c of COMMANDS) {
      expect(readme).toContain(`lre ${c.name}`);
      for (const f of c.flags) expect(readme).toContain(`--${f.name}`);
    }
  });

  test("README's CLI reference is the help text, verbatim (fix with scripts/update-readme.ts)", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    expect(readme).toContain(cliReference());
  });
});

describe("sizes", () => {
  test.each([
    ["500MB", 500_000_000],
    ["20GiB", 20 * 1024 ** 3],
    ["20G", 20 * 1024 ** 3],
    ["1.5KiB", 1536],
    ["4096", 4096],
    ["2tb", 2_000_000_000_000],
    ["10 MiB", 10 * 1024 ** 2],
  ])("%s is %d bytes", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  test.each(["", "GiB", "-1G", "1XB", "1.2.3"])("%p is rejected", (text) => {
    expect(() => parseSize(text)).toThrow(RangeError);
  });
});

describe("durations", () => {
  test.each([
    ["3h", 3 * 3600_000],
    ["90m", 90 * 60_000],
    ["1h30m", 90 * 60_000],
    ["1.5d", 36 * 3600_000],
    ["1w", 7 * 86_400_000],
  ])("%s is %d ms, and formats back to the same duration", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
    expect(parseDuration(formatDuration(ms))).toBe(ms);
  });

  test("0 is a duration only where zero is allowed (--protect-for), never for --since", () => {
    expect(parseDuration("0", { allowZero: true })).toBe(0);
    expect(parseDuration("0h", { allowZero: true })).toBe(0);
    expect(formatDuration(0)).toBe("0");
    expect(() => parseDuration("0")).toThrow(RangeError);
    expect(() => parseDuration("0h")).toThrow("must be more than zero");
  });

  test.each(["", "3", "h", "-1h", "3 h", "1y"])("%p is rejected", (text) => {
    expect(() => parseDuration(text, { allowZero: true })).toThrow(RangeError);
  });
});

describe("HOST:PORT", () => {
  test("IPv4, names and bracketed IPv6", () => {
    expect(parseHostPort("127.0.0.1:8980")).toEqual({ host: "127.0.0.1", port: 8980 });
    expect(parseHostPort("localhost:0")).toEqual({ host: "localhost", port: 0 });
    expect(parseHostPort("[::1]:8980")).toEqual({ host: "::1", port: 8980 });
  });
  test.each(["8980", "::1:8980", "host:", ":80", "host:99999"])("%p is rejected", (text) => {
    expect(() => parseHostPort(text)).toThrow(RangeError);
  });
});
