import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { SchedulerStats } from "../exec/scheduler";

/**
 * The scheduler lives in the server process, but `lre stats` is a separate
 * process, so the server publishes its counts in a small file in the data dir
 * (written atomically, about once a second while they change).
 */
export interface ExecutorStatus extends SchedulerStats {
  readonly pid: number;
  readonly jobs: number;
  readonly updatedAt: string;
}

const FILE = "executor-status.json";
const INTERVAL_MS = 1000;

export function publishExecutorStatus(dataDir: string, jobs: number, read: () => SchedulerStats): { stop(): void } {
  const path = join(dataDir, FILE);
  let last = "";
  const write = () => {
    const s = read();
    const key = JSON.stringify(s);
    if (key === last) return;
    last = key;
    const status: ExecutorStatus = { ...s, pid: process.pid, jobs, updatedAt: new Date().toISOString() };
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(status) + "\n");
    renameSync(tmp, path);
  };
  write();
  const timer = setInterval(write, INTERVAL_MS);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      rmSync(path, { force: true });
    },
  };
}

/** The status of a live server on `dataDir`, or undefined when none is running. */
export function readExecutorStatus(dataDir: string): ExecutorStatus | undefined {
  let status: ExecutorStatus;
  try {
    status = JSON.parse(readFileSync(join(dataDir, FILE), "utf8")) as ExecutorStatus;
  } catch {
    return undefined;
  }
  try {
    process.kill(status.pid, 0);
  } catch {
    return undefined; // Left behind by a server that was killed.
  }
  return status;
}
