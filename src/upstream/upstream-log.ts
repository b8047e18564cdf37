/** The part of the CLI logger the upstream modules use; kept here so src/upstream does not import src/cli. */
export interface UpstreamLog {
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export const silentLog: UpstreamLog = { warn: () => {}, info: () => {}, debug: () => {} };

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
