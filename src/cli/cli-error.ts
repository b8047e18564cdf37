/**
 * A failure a command reports to its user (exit status 1), as opposed to a
 * mistake on the command line (UsageError, exit status 2). The message names
 * the path or value involved and what to do.
 */
export class CliError extends Error {
  override readonly name = "CliError";
}

export function errnoOf(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err && typeof err.code === "string" ? err.code : undefined;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
