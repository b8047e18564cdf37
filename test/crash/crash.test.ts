/**
 * Crash safety of the durable store, against the real `lre serve` process
 * (reliability-targets §2, §3 and the crash harness of §8): the server is
 * SIGKILLed while clients upload blobs of 0 B to 24 MiB (inline and
 * file-backed, over ByteStream and BatchUpdateBlobs) and store action results,
 * then restarted on the same data directory, where everything it acknowledged
 * must still be there and intact.
 *
 * kill -9 keeps the page cache, so this proves ordering and scrubbing, not
 * fsync placement (that needs LazyFS, D-2). On failure the data directory and
 * the oracle log are kept and their path is printed.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClients, type ReapiClients } from "../support/grpc-client";
import { type LreServer, startLre } from "../support/lre-server";
import { checkStore, describe } from "./invariants";
import { Oracle } from "./oracle";
import { batchUpdate, byteStreamWrite, makeBlob, rng, updateAction, worker } from "./workload";

const MiB = 1024 * 1024;
const CYCLES = 7;
const CLIENTS = 6;
const SEED = Number(process.env.LRE_CRASH_SEED ?? Date.now() % 1_000_000);
const SERVE_ARGS = ["--no-exec", "--max-cache-size", "100GiB"];

const root = mkdtempSync(join(tmpdir(), "lre-crash-"));
const dataDir = join(root, "data");
const oracle = new Oracle(join(root, "oracle.jsonl"));
let failed = false;

afterAll(() => {
  if (failed || process.env.LRE_CRASH_KEEP === "1") console.error(`crash test: keeping ${root} (data/ and oracle.jsonl) for replay; seed ${SEED}`);
  else rmSync(root, { recursive: true, force: true });
});

/** Starts the server on the shared data dir and checks the store it opened. */
async function restartAndCheck(label: string, fullReadBack = false): Promise<{ server: LreServer; clients: ReapiClients }> {
  const server = await startLre({ dataDir, args: SERVE_ARGS });
  const clients = createClients(server.socketPath);
  const { violations, facts } = await checkStore(clients, dataDir, oracle, fullReadBack);
  oracle.note({ label, ...facts, violations: violations.length });
  if (violations.length > 0) {
    failed = true;
    clients.close();
    await server.kill9();
    throw new Error(`after ${label}, ${violations.length} violation(s):\n  ${violations.slice(0, 30).join("\n  ")}\n${server.output()}`);
  }
  return { server, clients };
}

test(
  "SIGKILL during concurrent uploads and action-cache writes loses nothing acknowledged",
  async () => {
    const r = rng(SEED);
    oracle.note({ seed: SEED });
    let { server, clients } = await restartAndCheck("first start");
    const unexpected: string[] = [];
    // Uploads cut off mid-stream, counted so a run that never caught one is visible in its output.
    let interruptedUploads = 0;

    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      let stopped = false;
      let killed = false;
      const conns = Array.from({ length: CLIENTS }, () => createClients(server.socketPath));
      const workers = conns.map((c, i) =>
        worker(c, oracle, rng(SEED * 31 + cycle * 97 + i), () => stopped, (err) => {
          if (!killed) unexpected.push(`cycle ${cycle}: ${describe(err)}`);
        }),
      );
      // Random moment: early kills land in the first uploads, late ones among large streams and AC writes.
      await Bun.sleep(r.between(150, 1800));
      killed = true;
      await server.kill9();
      stopped = true;
      await Promise.all(workers);
      for (const c of conns) c.close();
      clients.close();
      const tmpAtKill = readdirSync(join(dataDir, "tmp")).length;
      interruptedUploads += tmpAtKill;
      oracle.note({ cycle, killed: true, acked: oracle.acked.size, actions: oracle.actions.size, tmpAtKill });

      ({ server, clients } = await restartAndCheck(`kill ${cycle}`, cycle === CYCLES));
    }
    console.log(
      `crash test (seed ${SEED}): ${CYCLES} kills, ${oracle.acked.size} blobs and ${oracle.actions.size} action results acknowledged, ${interruptedUploads} upload temp files left by the kills and scrubbed`,
    );
    if (unexpected.length > 0) failed = true;
    expect(unexpected).toEqual([]);
    expect(oracle.acked.size).toBeGreaterThan(50);
    expect(oracle.actions.size).toBeGreaterThan(5);

    // New writes succeed on the recovered store.
    const fresh = makeBlob(3 * MiB);
    await byteStreamWrite(clients, fresh.digest, fresh.data);
    oracle.ack(fresh.digest, "bytestream");
    clients.close();
    await server.stop();
  },
  120_000,
);

/**
 * Failpoint-style: the kill lands in the same tick the acknowledgement
 * arrives, the narrowest window between "client told OK" and "anything the
 * server does next" (background flushes, use-time writes).
 */
test.each([
  ["a file-backed ByteStream upload", "file"],
  ["an inline BatchUpdateBlobs upload", "inline"],
  ["an UpdateActionResult", "action"],
] as const)(
  "SIGKILL right after %s is acknowledged keeps it",
  async (_label, kind) => {
    let { server, clients } = await restartAndCheck(`before ack-kill ${kind}`);
    const killNow = () => process.kill(server.pid, "SIGKILL");
    if (kind === "file") {
      const b = makeBlob(5 * MiB + 3);
      oracle.attempt(b.digest);
      await byteStreamWrite(clients, b.digest, b.data);
      killNow();
      oracle.ack(b.digest, "bytestream");
    } else if (kind === "inline") {
      const blobs = [makeBlob(100), makeBlob(300 * 1024)];
      for (const b of blobs) oracle.attempt(b.digest);
      const ok = await batchUpdate(clients, blobs);
      killNow();
      expect(ok.length).toBe(2);
      for (const d of ok) oracle.ack(d, "batch");
    } else {
      const out = makeBlob(2 * MiB);
      oracle.attempt(out.digest);
      await byteStreamWrite(clients, out.digest, out.data);
      oracle.ack(out.digest, "bytestream");
      const action = makeBlob(64).digest;
      oracle.attemptAction(action);
      await updateAction(clients, action, [out.digest]);
      killNow();
      oracle.ackAction({ action, blobs: [out.digest], outputPaths: ["out/f0"] });
    }
    await server.kill9();
    clients.close();
    ({ server, clients } = await restartAndCheck(`ack-kill ${kind}`));
    clients.close();
    await server.stop();
  },
  60_000,
);
