/**
 * A small command-line parser driven by a table (src/cli/commands.ts). The
 * same table produces `--help`, and tests check the README against it, so the
 * three cannot drift apart.
 */

export type FlagKind = "bool" | "string" | "size" | "int" | "seconds" | "duration" | "host-port" | "choice" | "assignment";

export interface FlagSpec {
  /** Long name without dashes. */
  readonly name: string;
  readonly kind: FlagKind;
  /** Placeholder shown in help, e.g. PATH or SIZE. */
  readonly metavar?: string;
  readonly choices?: readonly string[];
  readonly repeatable?: boolean;
  readonly help: string;
  /** Default as told to the user. */
  readonly defaultText?: string;
}

export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly flags: readonly FlagSpec[];
  /** Positional operands as shown in usage, e.g. "FILE"; a command without them accepts none. */
  readonly operands?: string;
}

/** A mistake on the command line: reported with usage, exit status 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

export type FlagValue = boolean | string | number | { host: string; port: number } | [string, string];

/** Parsed flags by name; repeatable flags keep every value in order. */
export class ParsedFlags {
  constructor(private readonly values: ReadonlyMap<string, readonly FlagValue[]>) {}

  has(name: string): boolean {
    return this.values.has(name);
  }
  private last(name: string): FlagValue | undefined {
    const all = this.values.get(name);
    return all?.[all.length - 1];
  }
  bool(name: string): boolean {
    return this.last(name) === true;
  }
  string(name: string): string | undefined {
    const v = this.last(name);
    return typeof v === "string" ? v : undefined;
  }
  number(name: string): number | undefined {
    const v = this.last(name);
    return typeof v === "number" ? v : undefined;
  }
  hostPort(name: string): { host: string; port: number } | undefined {
    const v = this.last(name);
    return typeof v === "object" && !Array.isArray(v) ? v : undefined;
  }
  strings(name: string): string[] {
    return (this.values.get(name) ?? []).filter((v): v is string => typeof v === "string");
  }
  assignments(name: string): [string, string][] {
    return (this.values.get(name) ?? []).filter((v): v is [string, string] => Array.isArray(v));
  }
}

export interface ParsedCommand {
  readonly command: CommandSpec;
  readonly flags: ParsedFlags;
  readonly help: boolean;
  /** Arguments that are not flags, in order; only for commands with `operands`. */
  readonly operands: readonly string[];
}

/** Parses the arguments after the command name. `--flag value` and `--flag=value` are both accepted. */
export function parseFlags(command: CommandSpec, args: readonly string[], convert: (spec: FlagSpec, raw: string) => FlagValue): ParsedCommand {
  const values = new Map<string, FlagValue[]>();
  let help = false;
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--") && command.operands !== undefined) {
      operands.push(arg);
      continue;
    }
    if (!arg.startsWith("--")) {
      throw new UsageError(`unexpected argument "${arg}" for "lre ${command.name}"`, command.name);
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = command.flags.find((f) => f.name === name);
    if (spec === undefined) {
      throw new UsageError(`unknown flag "--${name}" for "lre ${command.name}"`, command.name);
    }
    let raw: string | undefined;
    if (spec.kind === "bool") {
      if (eq >= 0) throw new UsageError(`flag "--${name}" takes no value`, command.name);
    } else if (eq >= 0) {
      raw = arg.slice(eq + 1);
    } else {
      raw = args[++i];
      if (raw === undefined) throw new UsageError(`flag "--${name}" needs a value (${spec.metavar ?? "VALUE"})`, command.name);
    }
    const previous = values.get(name);
    if (previous !== undefined && spec.repeatable !== true) {
      throw new UsageError(`flag "--${name}" was given more than once`, command.name);
    }
    let value: FlagValue;
    try {
      value = raw === undefined ? true : convert(spec, raw);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new UsageError(`bad value for "--${name}": ${why}`, command.name);
    }
    values.set(name, [...(previous ?? []), value]);
  }
  return { command, flags: new ParsedFlags(values), help, operands };
}
