/**
 * Starts a real `lre serve` as a child process for end-to-end tests: the same
 * entry point users run (`bun src/main.ts serve`), on a Unix socket in a fresh
 * temp directory, optionally also on loopback TCP with a kernel-chosen port.
 *
 * Readiness is the one address line serve prints on stdout once both
 * listeners are bound:
 *   lre listening on unix:///tmp/x/lre.sock and grpc://127.0.0.1:40123, data dir /tmp/x/data
 * Everything the child writes is kept, so a failed start or test can show it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

const REPO_ROOT = resolve(import.meta.dir, "..", "..");
const BUN = join(REPO_ROOT, "node_modules", ".bin", "bun");

export interface StartLreOptions {
  /** Also listen on 127.0.0.1 with a free port. @default false */
  readonly tcp?: boolean;
  /** Use this data dir instead of a fresh one (e.g. to restart on the same store). */
  readonly dataDir?: string;
  /** Further `lre serve` flags, e.g. ["--no-exec"] or ["--log-level", "debug"]. */
  readonly args?: readonly string[];
  /** How long to wait for the address line. @default 60000 */
  readonly readyTimeoutMs?: number;
}

/** How the server process ended: an exit code, or the signal that killed it. */
export interface LreExit {
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | number | null;
}

export interface LreServer {
  /** Absolute path of the Unix socket. */
  readonly socketPath: string;
  /** `unix://` URI of the socket, as Bazel and gRPC clients take it. */
  readonly unixUri: string;
  /** `host:port` of the TCP listener, when started with `tcp: true`. */
  readonly tcpAddress: string | undefined;
  readonly dataDir: string;
  readonly pid: number;
  /** Everything the server wrote so far, stdout then stderr; for failure messages. */
  output(): string;
  /** SIGTERM, then wait for exit (SIGKILL after 30 s). Resolves to how it ended. */
  stop(): Promise<LreExit>;
  /** SIGKILL and wait: a crash, with no chance to flush or clean up. */
  kill9(): Promise<void>;
  /** stop() if still running, then delete the temp directory (unless dataDir was given). */
  dispose(): Promise<void>;
}

/** Starts `lre serve` and resolves once it has printed its address line. */
export async function startLre(options: StartLreOptions = {}): Promise<LreServer> {
  // Short temp path: a Unix socket path must fit in 108 bytes.
  const root = mkdtempSync(join(tmpdir(), "lre-e2e-"));
  const socketPath = join(root, "run", "lre.sock");
  const dataDir = options.dataDir ?? join(root, "data");
  const argv = [
    BUN, join(REPO_ROOT, "src", "main.ts"), "serve",
    "--socket", socketPath,
    "--data-dir", dataDir,
    ...(options.tcp === true ? ["--tcp", "127.0.0.1:0"] : []),
    ...(options.args ?? []),
  ];
  const proc = Bun.spawn(argv, { cwd: REPO_ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });

  let stdoutText = "";
  let stderrText = "";
  let onOutput: () => void = () => {};
  const pump = async (stream: ReadableStream<Uint8Array>, append: (s: string) => void): Promise<void> => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      onOutput();
    }
  };
  const pumps = Promise.all([
    pump(proc.stdout, (s) => (stdoutText += s)),
    pump(proc.stderr, (s) => (stderrText += s)),
  ]).catch(() => {});
  const output = (): string => `--- lre stdout ---\n${stdoutText}\n--- lre stderr ---\n${stderrText}`;

  const exit = (): LreExit => ({ exitCode: proc.exitCode, signalCode: proc.signalCode });
  const stop = async (): Promise<LreExit> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return exit();
    proc.kill("SIGTERM");
    const killer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
    try {
      await proc.exited;
    } finally {
      clearTimeout(killer);
    }
    await pumps;
    return exit();
  };
  const kill9 = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    await proc.exited;
    await pumps;
  };

  let ready: { tcpAddress: string | undefined };
  try {
    ready = await waitForAddressLine(proc, () => stdoutText, (f) => (onOutput = f), options, output);
  } catch (err) {
    await kill9();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }

  return {
    socketPath,
    unixUri: `unix://${socketPath}`,
    tcpAddress: ready.tcpAddress,
    dataDir,
    pid: proc.pid,
    output,
    stop,
    kill9,
    async dispose() {
      try {
        await stop();
      } finally {
        // A caller-supplied data dir lives outside root and is left alone.
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}

function waitForAddressLine(
  proc: Subprocess<"ignore", "pipe", "pipe">,
  stdout: () => string,
  subscribe: (f: () => void) => void,
  options: StartLreOptions,
  output: () => string,
): Promise<{ tcpAddress: string | undefined }> {
  const timeoutMs = options.readyTimeoutMs ?? 60_000;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => finish(new Error(`lre serve printed no address line within ${timeoutMs} ms\n${output()}`)), timeoutMs);
    let done = false;
    function finish(result: Error | { tcpAddress: string | undefined }): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      subscribe(() => {});
      if (result instanceof Error) reject(result);
      else resolvePromise(result);
    }
    const check = (): void => {
      const line = stdout().split("\n").find((l) => /\blistening on\b/.test(l) && l.includes("unix://"));
      if (line === undefined) return;
      const tcp = /grpc:\/\/([^\s,]+)/.exec(line)?.[1];
      if (options.tcp === true && tcp === undefined) {
        finish(new Error(`lre serve was asked for TCP but its address line names no grpc:// address: "${line}"`));
        return;
      }
      finish({ tcpAddress: tcp });
    };
    subscribe(check);
    check();
    void proc.exited.then((code) => {
      // Let the pumps deliver the last output before judging.
      setTimeout(() => {
        check();
        finish(new Error(`lre serve exited with ${code} before it was ready\n${output()}`));
      }, 50);
    });
  });
}
