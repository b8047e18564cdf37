import { afterAll, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { CHUNK_BYTES } from "../../src/cas/blob-store";
import { createHasher } from "../../src/digest/hasher";
import { openStorage } from "../../src/storage/open-storage";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const SIZE = 300 * 1024 * 1024;

/** The blob is generated chunk by chunk so the test itself never holds it. */
function* chunks(): Generator<Uint8Array> {
  const buf = new Uint8Array(CHUNK_BYTES);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 31) & 0xff;
  const view = new DataView(buf.buffer);
  for (let at = 0, n = 0; at < SIZE; at += CHUNK_BYTES, n++) {
    view.setUint32(0, n);
    yield buf.subarray(0, Math.min(CHUNK_BYTES, SIZE - at));
  }
}

test("a 300 MiB blob is written and read through the full stack with flat memory", async () => {
  const dataDir = await mkdtemp(`${tmpdir()}/lre-stream-`);
  dirs.push(dataDir);
  const s = await openStorage({ dataDir, maxBytes: 2 * SIZE });
  const h = createHasher("sha256");
  for (const c of chunks()) h.update(c);
  const digest = { fn: "sha256" as const, hash: h.hex(), sizeBytes: SIZE };

  Bun.gc(true);
  const before = process.memoryUsage().rss;
  let peak = before;
  // Collect first so the sample measures what is live, not garbage the
  // collector has not got to yet (which varies with whatever ran before).
  const sample = () => {
    Bun.gc(true);
    peak = Math.max(peak, process.memoryUsage().rss);
  };

  const w = await s.cas.beginWrite(digest);
  let n = 0;
  for (const c of chunks()) {
    await w.write(c);
    if (++n % 32 === 0) sample();
  }
  await w.commit();
  sample();

  const back = createHasher("sha256");
  let size = 0;
  for await (const c of await s.cas.read(digest)) {
    expect(c.byteLength).toBeLessThanOrEqual(CHUNK_BYTES);
    back.update(c);
    size += c.byteLength;
    if (++n % 32 === 0) sample();
  }
  expect(size).toBe(SIZE);
  expect(back.hex()).toBe(digest.hash);
  expect(await s.cas.filePath?.(digest)).toBeString();
  // Growth well under the blob's size proves nothing buffered it whole.
  expect(peak - before).toBeLessThan(SIZE / 4);
  await s.close();
}, 60_000);
