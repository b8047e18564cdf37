import { closeSync, mkdirSync, openSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { CliError, messageOf } from "./cli-error";

/**
 * Checks the data directory can be created and written, before LMDB gets a
 * chance to fail on it with a less helpful message.
 */
export function ensureWritableDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const probe = join(dir, `.lre-write-check-${process.pid}`);
    const fd = openSync(probe, "w", 0o600);
    try {
      writeSync(fd, "ok");
    } finally {
      closeSync(fd);
    }
    unlinkSync(probe);
  } catch (err) {
    throw new CliError(
      `data dir "${dir}" cannot be written (${messageOf(err)}); fix its permissions or choose another with --data-dir`,
    );
  }
}
