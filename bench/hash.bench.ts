/**
 * Hashing throughput: SHA-256 (Bun's one-shot and streaming APIs, which lre
 * uses) and BLAKE3 (native addon) against `openssl speed` SHA-256 measured in
 * the same run. Goals: SHA-256 ≥ 95% of OpenSSL; BLAKE3 ≥ 3× SHA-256 at 1 MiB.
 */
import { createHasher, hashBytes } from "../src/digest/hasher";
import { type Figure, isQuick, medianOf, writeResult, formatTable } from "./lib/harness";

const quick = isQuick();
const runs = quick ? 1 : 5;
const KiB = 1024;
const MiB = 1024 * KiB;
const sizes: ReadonlyArray<[string, number]> = [
  ["1 KiB", KiB],
  ["64 KiB", 64 * KiB],
  ["1 MiB", MiB],
  ["64 MiB", 64 * MiB],
];

/** MiB/s of OpenSSL's EVP SHA-256 for one buffer size, from its machine-readable output. */
function opensslSha256(bytes: number): number {
  const secs = quick ? 1 : 3;
  const out = Bun.spawnSync(["openssl", "speed", "-mr", "-elapsed", "-seconds", String(secs), "-bytes", String(bytes), "-evp", "sha256"], {
    stderr: "pipe",
  });
  // "+F:<n>:sha256:<bytes per second for each size>"
  const line = out.stdout.toString().split("\n").find((l) => l.startsWith("+F:"));
  const bps = Number(line?.split(":").at(-1));
  if (!Number.isFinite(bps) || bps <= 0) throw new Error(`could not read openssl speed output: ${out.stdout.toString()}`);
  return bps / MiB;
}

function throughput(fn: "sha256" | "blake3", size: number, streaming: boolean): number {
  const buf = new Uint8Array(size).fill(7);
  const budgetBytes = quick ? 16 * MiB : 512 * MiB;
  const iters = Math.max(3, Math.floor(budgetBytes / size));
  const start = Bun.nanoseconds();
  for (let i = 0; i < iters; i++) {
    if (streaming) {
      const h = createHasher(fn);
      for (let o = 0; o < size; o += 64 * KiB) h.update(buf.subarray(o, Math.min(size, o + 64 * KiB)));
      h.hex();
    } else {
      hashBytes(fn, buf);
    }
  }
  const secs = (Bun.nanoseconds() - start) / 1e9;
  return (iters * size) / MiB / secs;
}

function smallDigestsPerSecond(fn: "sha256" | "blake3"): number {
  const blobs = Array.from({ length: 1000 }, (_, i) => new TextEncoder().encode(`${i}`.padEnd(100, "x")));
  const rounds = quick ? 20 : 500;
  const start = Bun.nanoseconds();
  for (let r = 0; r < rounds; r++) for (const b of blobs) hashBytes(fn, b);
  return (rounds * blobs.length) / ((Bun.nanoseconds() - start) / 1e9);
}

const figures: Figure[] = [];
for (const [label, size] of sizes) {
  const openssl = await medianOf(runs, () => opensslSha256(size));
  const sha = await medianOf(runs, () => throughput("sha256", size, false));
  const shaStream = await medianOf(runs, () => throughput("sha256", size, true));
  const b3 = await medianOf(runs, () => throughput("blake3", size, false));
  const base = { name: "openssl sha256", value: openssl };
  figures.push({ name: `sha256 one-shot ${label}`, value: sha, unit: "MiB/s", baseline: base, goal: { op: ">=", target: 0.95, of: "ratio" } });
  figures.push({ name: `sha256 streaming ${label}`, value: shaStream, unit: "MiB/s", baseline: base });
  figures.push({
    name: `blake3 ${label}`,
    value: b3,
    unit: "MiB/s",
    baseline: { name: "lre sha256", value: sha },
    ...(size === MiB ? { goal: { op: ">=", target: 3, of: "ratio" } as const } : {}),
  });
}
const small256 = await medianOf(runs, () => smallDigestsPerSecond("sha256"));
figures.push({ name: "sha256 100 B blobs", value: small256, unit: "digests/s" });
figures.push({ name: "blake3 100 B blobs", value: await medianOf(runs, () => smallDigestsPerSecond("blake3")), unit: "digests/s", baseline: { name: "sha256", value: small256 } });

const result = writeResult("hash", figures);
console.log(formatTable([result]));
