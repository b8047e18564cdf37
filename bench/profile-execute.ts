/**
 * Profiles `lre serve` while it executes trivial actions, the path behind
 * bench/actions "Execute trivial actions": the server runs under
 * `bun --cpu-prof-md`, four protocol clients submit ACTIONS actions with
 * inputs already in the CAS, and the profile lands in PROFILE_DIR when the
 * server exits. Not part of `npm run bench`; run by hand:
 *   ./node_modules/.bin/bun bench/profile-execute.ts [ACTIONS] [PROFILE_DIR]
 * With LRE_NO_PROFILE=1 the server runs without the profiler (for timing);
 * LRE_SERVE_ARGS adds flags to `lre serve` (e.g. "--jobs 4").
 */
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toWire, type Digest } from "../src/digest/digest";
import { digestOf } from "../src/digest/hasher";
import { Action, Command, Directory, ExecuteResponse } from "../src/proto/build/bazel/remote/execution/v2/remote_execution";
import { createClients, type ReapiClients } from "../test/support/grpc-client";
import { ensureNixToolchain } from "../test/support/nix-fixture";

const ACTIONS = Number(process.argv[2] ?? 600);
const PROFILE_DIR = process.argv[3] ?? mkdtempSync(join(tmpdir(), "lre-prof-"));
const CLIENTS = 4;
const nix = await ensureNixToolchain();
const TRUE = `${nix.busybox}/bin/true`;
const root = mkdtempSync(join(tmpdir(), "lre-prof-"));
const socket = join(root, "run", "lre.sock");
const server = Bun.spawn(
  [...(process.env.LRE_WRAP ? [process.env.LRE_WRAP] : [process.execPath]), ...(process.env.LRE_NO_PROFILE ? [] : ["--cpu-prof-md", `--cpu-prof-dir=${PROFILE_DIR}`]), join(import.meta.dir, "..", "src", "main.ts"), "serve", "--socket", socket, "--data-dir", join(root, "data"), ...(process.env.LRE_SERVE_ARGS ?? "").split(" ").filter(Boolean)],
  { stdio: ["ignore", "inherit", "inherit"] },
);
while (!existsSync(socket)) await Bun.sleep(50);

async function uploadAll(c: ReapiClients, blobs: readonly Uint8Array[]): Promise<Digest[]> {
  const digests = blobs.map((b) => digestOf("sha256", b));
  for (let i = 0; i < blobs.length; i += 500) {
    await c.batchUpdateBlobs({
      requests: blobs.slice(i, i + 500).map((data, j) => ({ digest: toWire(digests[i + j]!), data: Buffer.from(data) })),
    });
  }
  return digests;
}

const clients = Array.from({ length: CLIENTS }, () => createClients(socket));
const c0 = clients[0]!;
const [da, db] = await uploadAll(c0, [new TextEncoder().encode("a\n"), new TextEncoder().encode("b\n")]);
const dir = Directory.encode(
  Directory.fromPartial({ files: [{ name: "a.txt", digest: toWire(da!) }, { name: "b.txt", digest: toWire(db!) }] }),
).finish();
const cmd = Command.encode(Command.fromPartial({ arguments: [TRUE] })).finish();
const [rootDigest, cmdDigest] = await uploadAll(c0, [dir, cmd]);
const actions = await uploadAll(
  c0,
  Array.from({ length: ACTIONS }, (_, i) =>
    Action.encode(Action.fromPartial({ commandDigest: toWire(cmdDigest!), inputRootDigest: toWire(rootDigest!), salt: Buffer.from(`p-${Date.now()}-${i}`) })).finish(),
  ),
);
type Phases = Record<"queued" | "staging" | "running" | "uploading" | "worker", number[]>;
const phases: Phases = { queued: [], staging: [], running: [], uploading: [], worker: [] };
const ms = (t: { seconds: number | string; nanos: number } | undefined) => (t === undefined ? NaN : Number(t.seconds) * 1000 + t.nanos / 1e6);
let next = 0;
const start = performance.now();
await Promise.all(
  clients.map(async (c) => {
    while (next < actions.length) {
      const ops = await c.execute({ actionDigest: toWire(actions[next++]!), skipCacheLookup: true });
      const value = ops.at(-1)?.response?.value;
      if (value === undefined) continue;
      const m = ExecuteResponse.decode(value).result?.executionMetadata;
      if (m === undefined) continue;
      phases.queued.push(ms(m.workerStartTimestamp) - ms(m.queuedTimestamp));
      phases.staging.push(ms(m.inputFetchCompletedTimestamp) - ms(m.inputFetchStartTimestamp));
      phases.running.push(ms(m.executionCompletedTimestamp) - ms(m.executionStartTimestamp));
      phases.uploading.push(ms(m.outputUploadCompletedTimestamp) - ms(m.outputUploadStartTimestamp));
      phases.worker.push(ms(m.workerCompletedTimestamp) - ms(m.workerStartTimestamp));
    }
  }),
);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
console.log(Object.entries(phases).map(([k, v]) => `${k} ${med(v).toFixed(2)} ms`).join(", "), "(medians)");
const secs = (performance.now() - start) / 1000;
console.log(`${ACTIONS} actions in ${secs.toFixed(2)} s: ${(ACTIONS / secs).toFixed(1)} actions/s`);
for (const c of clients) c.close();
server.kill("SIGTERM");
await server.exited;
console.log(`profile in ${PROFILE_DIR}`);
