import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The upstream's state as `lre stats` shows it. The server owns it, so, like
 * the executor status, it is published in a small file in the data dir
 * (written atomically about once a second while it changes).
 */
export interface UpstreamStatus {
  readonly pid: number;
  readonly url: string;
  /** null until the first call to the upstream has finished. */
  readonly reachable: boolean | null;
  /** Uploads waiting in the write-behind queue (blobs and action results). */
  readonly queued: number;
  readonly lastError: string | null;
  readonly lastErrorAt: string | null;
  readonly uploadedBlobs: number;
  readonly uploadedResults: number;
  readonly dropped: number;
  readonly fetchedBlobs: number;
  readonly fetchedResults: number;
  readonly executeUpstream: string;
}

const FILE = "upstream-status.json";
const INTERVAL_MS = 1000;

export function publishUpstreamStatus(dataDir: string, read: () => Omit<UpstreamStatus, "pid">): { stop(): void; now(): void } {
  const path = join(dataDir, FILE);
  let last = "";
  const write = () => {
    const status: UpstreamStatus = { ...read(), pid: process.pid };
    const text = JSON.stringify(status);
    if (text === last) return;
    last = text;
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, text + "\n");
    renameSync(tmp, path);
  };
  write();
  const timer = setInterval(() => {
    try {
      write();
    } catch {
      // The data dir is the user's; a failed status write must not stop serving.
    }
  }, INTERVAL_MS);
  timer.unref();
  return {
    now: write,
    stop() {
      clearInterval(timer);
      rmSync(path, { force: true });
    },
  };
}

/** The status of a live server's upstream on `dataDir`, or undefined when none runs with --upstream. */
export function readUpstreamStatus(dataDir: string): UpstreamStatus | undefined {
  let status: UpstreamStatus;
  try {
    status = JSON.parse(readFileSync(join(dataDir, FILE), "utf8")) as UpstreamStatus;
  } catch {
    return undefined;
  }
  try {
    process.kill(status.pid, 0);
  } catch {
    return undefined;
  }
  return status;
}

export function formatUpstreamStatus(s: UpstreamStatus): string {
  const state = s.reachable === null ? "not contacted yet" : s.reachable ? "reachable" : "UNREACHABLE (serving from the local store)";
  const error = s.lastError === null ? "" : `; last error at ${s.lastErrorAt}: ${s.lastError}`;
  return `${s.url} ${state}, ${s.queued} uploads queued, ${s.uploadedBlobs} blobs and ${s.uploadedResults} results uploaded, ${s.fetchedBlobs} blobs and ${s.fetchedResults} results fetched, execute ${s.executeUpstream}${error}`;
}
