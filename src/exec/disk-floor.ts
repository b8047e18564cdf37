import { statfsSync } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { formatSize } from "../config/size";
import { RpcError } from "../errors";
import { parallel } from "./pool";

/**
 * Keeps actions from filling the disk that holds lre's data dir.
 *
 * An action writes its outputs (and anything else) into its exec root on
 * that disk while it runs; the output budget applies only when outputs are
 * collected afterwards, so without this a runaway action could fill the disk
 * (and with it LMDB, the file cache and the rest of the host) before it ends.
 *
 * Why a free-space floor watched with statfs, rather than the alternatives:
 *  - A per-action byte cap measured by walking each exec root costs a walk of
 *    every running input tree (often 10⁵ hardlinked inputs) per tick, and
 *    still lets N actions each under the cap fill the disk together.
 *  - RLIMIT_FSIZE caps single files only: a loop creating files evades it.
 *  - No cgroup controller caps bytes written, and a filesystem per action
 *    (loop device, quota project) costs far more than the ≈ 8 ms a sandbox
 *    takes to start.
 * statfs costs ≈ 3 µs and no process, answers the question that matters
 * (is the host about to run out?) whatever the actions do, and only runs
 * while an action runs. The expensive part, measuring which action to stop,
 * happens only once the floor is crossed.
 *
 * The floor must cover what a fast writer adds between two checks (≈ 1 GiB
 * in 500 ms on an NVMe disk), hence at least 1 GiB; 2% scales it for big
 * disks, and a tenth of the filesystem keeps small ones usable at all.
 */
export function defaultDiskFloor(totalBytes: number): number {
  return Math.floor(Math.min(Math.max(GIB, totalBytes * 0.02), totalBytes * 0.1));
}

export interface DiskFloorOptions {
  /** A directory on the filesystem to protect: lre's data dir. */
  readonly dir: string;
  /** Free bytes to keep, given the filesystem's size. @default defaultDiskFloor */
  readonly floorBytes?: (totalBytes: number) => number;
  /** Time between checks while actions run. @default 500 ms */
  readonly intervalMs?: number;
}

/** One running action as the guard sees it; see DiskFloorGuard.watch. */
export interface WatchedRun {
  /** The sandbox has exited: from now on this run is never chosen to be stopped. */
  ended(): void;
  /** Its exec dir is gone, so the space it held is free again. */
  release(): void;
}

interface Run {
  readonly dir: string;
  readonly stop: (reason: RpcError) => void;
  running: boolean;
  stopped: boolean;
  readonly released: Promise<void>;
}

const GIB = 1024 ** 3;

/**
 * Watches free space below the floor while actions run. Once crossed, it
 * stops the running action holding the most space in its exec dir, then
 * waits until that dir is removed before judging again, so one runaway
 * action costs one action, not every action running beside it. If the space
 * stays short (something else fills the disk) the next largest goes, and so
 * on: the host is protected whatever the actions do. Actions are not started
 * while the disk is below the floor.
 */
export class DiskFloorGuard {
  private readonly runs = new Set<Run>();
  private readonly intervalMs: number;
  private timer: ReturnType<typeof setInterval> | undefined;
  private checking: Promise<void> | undefined;

  constructor(private readonly opts: DiskFloorOptions) {
    this.intervalMs = opts.intervalMs ?? 500;
  }

  /**
   * Before an action is staged: resolves when the disk is above the floor,
   * waiting for the cleanup of actions already stopped for space (their
   * space is about to come back); otherwise RESOURCE_EXHAUSTED.
   */
  async admit(): Promise<void> {
    for (;;) {
      const space = this.space();
      if (space === undefined || space.freeBytes >= space.floorBytes) return;
      const pending = [...this.runs].filter((r) => r.stopped).map((r) => r.released);
      if (pending.length === 0) {
        throw RpcError.resourceExhausted(
          `the disk holding lre's data dir ${this.opts.dir} has ${formatSize(space.freeBytes)} free, below the ${formatSize(space.floorBytes)} ` +
            `lre keeps free so that a full disk cannot break its store or the host; the action was not started. ` +
            `Free disk space (for example with \`lre gc\`, or by removing other files on that disk) and retry`,
        );
      }
      await Promise.all(pending);
    }
  }

  /**
   * Registers a running action whose exec dir is `dir`; `stop` must kill it
   * and report `reason`. Call `ended()` when its sandbox exits and
   * `release()` once its exec dir is removed (also on failure).
   */
  watch(dir: string, stop: (reason: RpcError) => void): WatchedRun {
    let release!: () => void;
    const run: Run = { dir, stop, running: true, stopped: false, released: new Promise<void>((r) => (release = r)) };
    this.runs.add(run);
    if (this.timer === undefined) {
      this.timer = setInterval(() => void this.check(), this.intervalMs);
      this.timer.unref?.();
    }
    return {
      ended: () => {
        run.running = false;
      },
      release: () => {
        run.running = false;
        if (!this.runs.delete(run)) return;
        release();
        if (this.runs.size === 0 && this.timer !== undefined) {
          clearInterval(this.timer);
          this.timer = undefined;
        }
      },
    };
  }

  /** One tick; never two at once, since measuring exec dirs can outlast a tick. */
  private check(): Promise<void> {
    this.checking ??= this.checkNow().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async checkNow(): Promise<void> {
    const space = this.space();
    if (space === undefined || space.freeBytes >= space.floorBytes) return;
    for (const r of this.runs) if (r.stopped) return; // its space comes back when its dir is removed
    const candidates = [...this.runs].filter((r) => r.running);
    if (candidates.length === 0) return;
    const held = await Promise.all(candidates.map((r) => privateBytes(r.dir)));
    let victim = -1;
    for (let i = 0; i < candidates.length; i++) {
      if (candidates[i]!.running && (victim < 0 || held[i]! > held[victim]!)) victim = i;
    }
    if (victim < 0) return;
    const run = candidates[victim]!;
    run.stopped = true;
    run.stop(
      RpcError.resourceExhausted(
        `the disk holding lre's data dir ${this.opts.dir} fell below the ${formatSize(space.floorBytes)} of free space lre keeps ` +
          `(${formatSize(space.freeBytes)} left), and this action, which held the most space of the running actions ` +
          `(${formatSize(held[victim]!)} written in its exec dir), was killed. Its output so far is in the result; it was not cached. ` +
          `If the action writes without bound, fix it; if it really needs that much space, free disk space or move lre's data dir to a larger disk, then retry`,
      ),
    );
  }

  private space(): { freeBytes: number; floorBytes: number } | undefined {
    let s: ReturnType<typeof statfsSync>;
    try {
      s = statfsSync(this.opts.dir);
    } catch {
      return undefined; // no data dir yet: nothing of lre's to protect there
    }
    // bavail, not bfree: blocks reserved for root are the host's margin, not lre's.
    const total = s.blocks * s.bsize;
    return { freeBytes: s.bavail * s.bsize, floorBytes: (this.opts.floorBytes ?? defaultDiskFloor)(total) };
  }
}

/**
 * Bytes that removing `dir` frees: blocks of inodes linked only there.
 * Inputs are hardlinks into the shared file cache and stay behind, so they
 * do not count; an action that hardlinks its own files to hide them only
 * ranks lower, and is still stopped if the space stays short.
 */
async function privateBytes(dir: string): Promise<number> {
  let total = 0;
  // One directory at a time, 16 lstats at once: bounded however deep the tree.
  const pending = [dir];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    let names: string[];
    try {
      names = await readdir(d);
    } catch {
      continue; // removed meanwhile, or not a directory
    }
    const parent = d;
    await parallel(names, 16, async (name) => {
      const path = join(parent, name);
      try {
        const st = await lstat(path);
        if (st.isDirectory()) pending.push(path);
        if (st.isDirectory() || st.nlink === 1) total += st.blocks * 512;
      } catch {
        // removed meanwhile
      }
    });
  }
  return total;
}
