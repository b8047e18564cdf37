import { mkdtempSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

/** Runs lre as users do: a separate process, from source or from the compiled binary. */

export const REPO = realpathSync(join(import.meta.dir, "..", ".."));
export const BUN = join(REPO, "node_modules", ".bin", "bun");
export const FROM_SOURCE = [BUN, join(REPO, "src", "main.ts")];

export function tempDir(prefix = "lre-cli-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface Finished {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `lre ARGS` to completion. */
export async function lre(args: string[], opts: { env?: Record<string, string>; cmd?: string[]; cwd?: string } = {}): Promise<Finished> {
  const proc = Bun.spawn([...(opts.cmd ?? FROM_SOURCE), ...args], {
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
  });
  const [stdout, stderr, exitCode] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { exitCode, stdout, stderr };
}

export interface Server {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** The one line serve prints on stdout. */
  banner: string;
  stderr(): Promise<string>;
}

/** Starts `lre serve ARGS` and resolves once it prints where it listens; rejects if it exits first. */
export async function startServe(args: string[], opts: { cmd?: string[]; cwd?: string } = {}): Promise<Server> {
  const proc = Bun.spawn([...(opts.cmd ?? FROM_SOURCE), "serve", ...args], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
  });
  let stderrText: Promise<string> | undefined;
  const stderr = () => (stderrText ??= new Response(proc.stderr).text());
  const reader = proc.stdout.getReader();
  let seen = "";
  const decoder = new TextDecoder();
  while (!seen.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      await proc.exited;
      throw new Error(`lre serve exited with ${proc.exitCode} before listening: ${await stderr()}`);
    }
    seen += decoder.decode(value);
  }
  reader.releaseLock();
  return { proc, banner: seen.trimEnd(), stderr };
}

export async function stop(server: Server, signal: NodeJS.Signals = "SIGTERM"): Promise<number> {
  server.proc.kill(signal);
  return server.proc.exited;
}
