import { processEnvironment } from "../config/defaults";
import { CliError } from "./cli-error";
import { COMMANDS, convertFlag } from "./commands";
import type { Backend } from "./contracts";
import { formatChecks, runChecks } from "./doctor";
import { runGc } from "./gc";
import { lreBackend } from "./backend";
import { parseFlags, UsageError } from "./parse-args";
import { runServe } from "./serve";
import { dataDirFrom, serveConfigFrom, socketPathFrom } from "./serve-config";
import { runStats } from "./stats";
import { runConfig } from "./config-command";
import { runExport } from "./export";
import { runImport } from "./import";
import { commandUsage, generalUsage } from "./usage";
import { versionLine } from "./version";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const out = (text: string) => void process.stdout.write(text);
const err = (text: string) => void process.stderr.write(text);

/** Runs one lre command line and returns the exit status. */
export async function runCli(argv: readonly string[], backend: Backend = lreBackend): Promise<number> {
  const [first, ...rest] = argv;
  try {
    if (first === undefined) {
      err(generalUsage());
      return EXIT_USAGE;
    }
    if (first === "--help" || first === "-h") {
      out(generalUsage());
      return EXIT_OK;
    }
    if (first === "--version" || first === "-V") {
      out(versionLine() + "\n");
      return EXIT_OK;
    }
    const command = COMMANDS.find((c) => c.name === first);
    if (command === undefined) {
      throw new UsageError(first.startsWith("-") ? `unknown flag "${first}"` : `unknown command "${first}"`);
    }
    if (command.name === "help") {
      const topic = rest[0];
      const about = topic === undefined ? undefined : COMMANDS.find((c) => c.name === topic);
      if (topic !== undefined && about === undefined) throw new UsageError(`unknown command "${topic}"`);
      out(about === undefined ? generalUsage() : commandUsage(about));
      return EXIT_OK;
    }
    const parsed = parseFlags(command, rest, convertFlag);
    if (parsed.help) {
      out(commandUsage(command));
      return EXIT_OK;
    }
    const env = processEnvironment();
    const flags = parsed.flags;
    switch (command.name) {
      case "serve":
        return await runServe(serveConfigFrom(flags, env), backend, { stdout: (line) => out(line + "\n") });
      case "doctor": {
        const results = await runChecks({
          dataDir: dataDirFrom(flags, env),
          socketPath: socketPathFrom(flags, env),
          path: env.env.PATH ?? "",
        });
        out(formatChecks(results));
        return results.some((r) => r.status === "fail") ? EXIT_FAILURE : EXIT_OK;
      }
      case "gc": {
        const to = flags.number("to");
        if (to === undefined) throw new UsageError('"lre gc" needs --to SIZE, e.g. --to 10GiB', "gc");
        const protectMs = flags.number("protect-for");
        return await runGc(backend, { dataDir: dataDirFrom(flags, env), targetBytes: to, ...(protectMs === undefined ? {} : { protectMs }) }, out);
      }
      case "stats": {
        const maxBytes = flags.number("max-cache-size");
        return await runStats(backend, { dataDir: dataDirFrom(flags, env), json: flags.bool("json"), ...(maxBytes === undefined ? {} : { maxBytes }) }, out);
      }
      case "export":
        return await runExport(backend, parsed.operands, flags, env, out);
      case "import":
        return await runImport(backend, parsed.operands, flags, env, out);
      case "config":
        return runConfig(parsed.operands, flags, env, out);
      case "version":
        out(versionLine() + "\n");
        return EXIT_OK;
      default:
        throw new Error(`command "${command.name}" has no handler`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      const about = e.command === undefined ? undefined : COMMANDS.find((c) => c.name === e.command);
      err(`lre: ${e.message}\n\n${about === undefined ? generalUsage() : commandUsage(about)}`);
      return EXIT_USAGE;
    }
    if (e instanceof CliError) {
      err(`lre: ${e.message}\n`);
      return EXIT_FAILURE;
    }
    throw e;
  }
}
