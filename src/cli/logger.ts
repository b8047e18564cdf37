import type { LogLevel } from "../config/config";

/**
 * lre's one logger: plain lines on stderr, so stdout stays free for what a
 * command prints on purpose (serve's address line, stats).
 */
export interface Logger {
  readonly level: LogLevel;
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
  enabled(level: LogLevel): boolean;
}

const RANK: Readonly<Record<LogLevel, number>> = { error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(level: LogLevel, write: (line: string) => void = (l) => void process.stderr.write(l)): Logger {
  const emit = (at: LogLevel, message: string): void => {
    if (RANK[at] > RANK[level]) return;
    write(`${new Date().toISOString()} ${at.toUpperCase().padEnd(5)} ${message}\n`);
  };
  return {
    level,
    error: (m) => emit("error", m),
    warn: (m) => emit("warn", m),
    info: (m) => emit("info", m),
    debug: (m) => emit("debug", m),
    enabled: (at) => RANK[at] <= RANK[level],
  };
}
