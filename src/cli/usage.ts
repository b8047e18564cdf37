import { COMMANDS } from "./commands";
import type { CommandSpec, FlagSpec } from "./parse-args";

/** Help text, rendered from the command table so it always lists every flag. */

export function generalUsage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = [
    "lre: a local Bazel/Buck2 remote execution server (REAPI v2)",
    "",
    "usage: lre <command> [flags]",
    "       lre --version | --help",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    'Run "lre <command> --help" for the flags of a command.',
  ];
  return lines.join("\n") + "\n";
}

export function flagSynopsis(f: FlagSpec): string {
  return f.kind === "bool" ? `--${f.name}` : `--${f.name} ${f.metavar ?? "VALUE"}`;
}

export function commandUsage(c: CommandSpec): string {
  const operands = c.operands === undefined ? "" : ` ${c.operands}`;
  const lines = [`usage: lre ${c.name}${operands}${c.flags.length > 0 ? " [flags]" : ""}`, "", c.summary];
  if (c.flags.length > 0) {
    lines.push("", "flags:");
    for (const f of c.flags) {
      lines.push(`  ${flagSynopsis(f)}`);
      let text = f.help;
      if (f.choices !== undefined && f.kind === "choice") text += ` (${f.choices.join("|")})`;
      if (f.defaultText !== undefined) text += `; default: ${f.defaultText}`;
      lines.push(`      ${text}`);
    }
  }
  lines.push("  --help", "      show this help");
  return lines.join("\n") + "\n";
}

/** Every help text lre can print, joined: what tests compare the flag table against. */
export function fullHelp(): string {
  return [generalUsage(), ...COMMANDS.map(commandUsage)].join("\n");
}

export const README_START = "<!-- cli-reference:start -->";
export const README_END = "<!-- cli-reference:end -->";

/** The README's CLI reference section, markers included: each command's help, verbatim. */
export function cliReference(): string {
  const blocks = [README_START, "", "```", generalUsage().trimEnd(), "```"];
  for (const c of COMMANDS) {
    blocks.push("", `### lre ${c.name}`, "", "```", commandUsage(c).trimEnd(), "```");
  }
  blocks.push("", README_END);
  return blocks.join("\n");
}
