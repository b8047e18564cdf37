import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { RootDatabase } from "lmdb";
import { LmdbActionCache } from "../../src/ac/lmdb-action-cache";
import { LmdbBlobStore } from "../../src/cas/lmdb-blob-store";
import { digestOf } from "../../src/digest/hasher";
import { ActionResult } from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { type LmdbEnv, acquireEnv } from "../../src/storage/lmdb-env";

/**
 * With lmdb-js's default overlappingSync a write resolves at commit, before
 * the commit is on disk; a power cut then loses it. A write may be
 * acknowledged only after the env's `flushed` (reliability-targets §2, D-2).
 * Only a power cut shows the difference, so these tests inject the fault
 * instead: `flushed` is held pending, and every write must wait for it.
 */

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Holds `root.flushed` pending until `release()`, counting the waits. */
class HeldFlush {
  waits = 0;
  private open!: () => void;
  private readonly gate = new Promise<void>((resolve) => {
    this.open = resolve;
  });

  constructor(private readonly root: RootDatabase) {
    const real = root.flushed;
    const gate = this.gate;
    Object.defineProperty(root, "flushed", {
      configurable: true,
      get: () => {
        this.waits++;
        return gate.then(() => real);
      },
    });
  }

  release(): void {
    this.open();
  }

  /** Puts the real `flushed` back (close waits on it). */
  restore(): void {
    this.open();
    delete (this.root as { flushed?: unknown }).flushed;
  }
}

/**
 * Asserts `write` is still pending once it waits for the flush, and resolves
 * as soon as the flush does.
 */
async function expectAcknowledgedAfterFlush(held: HeldFlush, write: Promise<unknown>): Promise<void> {
  let done = false;
  const tracked = write.then(() => {
    done = true;
  });
  for (let i = 0; i < 500 && held.waits === 0 && !done; i++) await Bun.sleep(2);
  expect(done).toBe(false);
  expect(held.waits).toBeGreaterThan(0);
  // Give a write that does not wait every chance to resolve anyway.
  await Bun.sleep(50);
  expect(done).toBe(false);
  held.release();
  await tracked;
  expect(done).toBe(true);
}

describe("a write is acknowledged only after LMDB has flushed it", () => {
  let dataDir: string;
  let env: LmdbEnv;
  let held: HeldFlush | undefined;

  beforeEach(async () => {
    held = undefined;
    dataDir = await mkdtemp(`${tmpdir()}/lre-flush-`);
    dirs.push(dataDir);
    // The same env (and root database) the stores below share.
    env = await acquireEnv(dataDir);
  });
  afterEach(async () => {
    held?.restore();
    await env.release();
  });

  test("LmdbBlobStore.put of an inline blob", async () => {
    const store = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 1024 });
    const h = (held = new HeldFlush(env.root));
    const data = new TextEncoder().encode("small enough to live in LMDB");
    const d = digestOf("sha256", data);
    await expectAcknowledgedAfterFlush(h, store.put(d, data));
    expect(await store.get(d)).toEqual(data);
    h.restore();
    await store.close();
  });

  test("LmdbBlobStore.put and a streamed upload of file blobs", async () => {
    const store = await LmdbBlobStore.open({ dataDir, inlineMaxBytes: 16 });
    const first = (held = new HeldFlush(env.root));
    const data = new TextEncoder().encode("larger than the 16-byte inline threshold, so stored as a file");
    const d = digestOf("sha256", data);
    await expectAcknowledgedAfterFlush(first, store.put(d, data));
    expect(await store.get(d)).toEqual(data);
    first.restore();

    const second = (held = new HeldFlush(env.root));
    const streamed = new TextEncoder().encode("another file blob, this one uploaded in two pieces");
    const sd = digestOf("sha256", streamed);
    const w = await store.beginWrite(sd);
    await w.write(streamed.subarray(0, 10));
    await w.write(streamed.subarray(10));
    await expectAcknowledgedAfterFlush(second, w.commit());
    expect(await store.get(sd)).toEqual(streamed);
    second.restore();
    await store.close();
  });

  test("LmdbActionCache.put", async () => {
    const ac = await LmdbActionCache.open({ dataDir });
    const h = (held = new HeldFlush(env.root));
    const action = digestOf("sha256", new TextEncoder().encode("an action"));
    const result = ActionResult.fromPartial({ exitCode: 0, stdoutRaw: Buffer.from("built") });
    await expectAcknowledgedAfterFlush(h, ac.put("", action, { result, origin: "client" }));
    expect((await ac.get("", action))?.result.exitCode).toBe(0);
    h.restore();
    await ac.close();
  });
});
