import type { Digest } from "../digest/digest";
import { DIGEST_FUNCTIONS, digestKey, type DigestFn } from "../digest/digest";
import { GrpcCode, RpcError, wrapError } from "../errors";
import { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { LmdbEnv } from "../storage/lmdb-env";
import { acquireEnv } from "../storage/lmdb-env";
import type { ActionCache, CachedResult, ResultOrigin } from "./action-cache";

const ORIGIN_BYTE: Readonly<Record<ResultOrigin, number>> = { sandbox: 1, client: 2 };
/** A sandbox result followed by its default-closure hash: [3][length][ASCII hash][ActionResult]. */
const SANDBOX_WITH_CLOSURE = 3;

/**
 * The durable action cache, in the same LMDB env as the CAS. A value is one
 * origin byte followed by the encoded ActionResult; the origin lets lre keep
 * trusting its own sandbox results apart from client uploads. Sandbox results
 * of actions that ran with the server's default closure carry that closure's
 * hash between the two (origin byte 3), so older values read unchanged. A put
 * resolves only after the commit is flushed to disk.
 */
export class LmdbActionCache implements ActionCache {
  private closed = false;

  private constructor(private readonly env: LmdbEnv) {}

  static async open(options: { dataDir: string }): Promise<LmdbActionCache> {
    return new LmdbActionCache(await acquireEnv(options.dataDir));
  }

  async get(instance: string, action: Digest): Promise<CachedResult | undefined> {
    this.checkOpen();
    const value = this.env.ac.getBinary(keyOf(instance, action));
    if (value === undefined || value.byteLength === 0) return undefined;
    // An undecodable entry is as good as absent: the action simply runs again.
    return decodeValue(value);
  }

  async put(instance: string, action: Digest, entry: CachedResult): Promise<void> {
    this.checkOpen();
    const value = encodeValue(entry);
    try {
      await this.env.ac.put(keyOf(instance, action), value);
      await this.env.root.flushed;
    } catch (err) {
      throw wrapError(err, `storing the action result of ${digestKey(action)}`);
    }
  }

  /**
   * Every decodable entry, for `lre export`. Paged, so no read transaction
   * stays open while the caller awaits between entries.
   */
  async *entries(): AsyncGenerator<{ instance: string; action: Digest; entry: CachedResult }> {
    this.checkOpen();
    let start: string | undefined;
    for (;;) {
      const page: { instance: string; action: Digest; entry: CachedResult }[] = [];
      let last: string | undefined;
      let seen = 0;
      let more = false;
      for (const { key, value } of this.env.ac.getRange({ ...(start === undefined ? {} : { start }), limit: 1001 })) {
        if (key === start) continue;
        if (seen === 1000) {
          more = true;
          break;
        }
        seen++;
        last = key;
        const parsed = parseKey(key);
        if (parsed === undefined || value.byteLength === 0) continue;
        // Undecodable: absent for get, so absent here too.
        const entry = decodeValue(value);
        if (entry !== undefined) page.push({ ...parsed, entry });
      }
      yield* page;
      if (!more || last === undefined) return;
      start = last;
    }
  }

  /** Entries by origin, for `lre stats`. Reads only the first byte of each value it can. */
  countByOrigin(): { sandbox: number; client: number } {
    let sandbox = 0;
    let client = 0;
    for (const { value } of this.env.ac.getRange({})) {
      if (value[0] === ORIGIN_BYTE.sandbox || value[0] === SANDBOX_WITH_CLOSURE) sandbox++;
      else client++;
    }
    return { sandbox, client };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.env.release();
  }

  private checkOpen(): void {
    if (this.closed) throw new RpcError(GrpcCode.UNAVAILABLE, "the action cache is closed; the server is shutting down, retry later");
  }
}

function encodeValue(entry: CachedResult): Buffer {
  const encoded = ActionResult.encode(entry.result).finish();
  const tag = entry.origin === "sandbox" && entry.closureHash !== undefined ? Buffer.from(entry.closureHash, "latin1") : undefined;
  if (tag !== undefined && tag.byteLength > 255) throw new RangeError("closure hash longer than 255 bytes");
  const head = tag === undefined ? 1 : 2 + tag.byteLength;
  const value = Buffer.allocUnsafe(head + encoded.byteLength);
  if (tag === undefined) {
    value[0] = ORIGIN_BYTE[entry.origin];
  } else {
    value[0] = SANDBOX_WITH_CLOSURE;
    value[1] = tag.byteLength;
    value.set(tag, 2);
  }
  value.set(encoded, head);
  return value;
}

function decodeValue(value: Uint8Array): CachedResult | undefined {
  try {
    if (value[0] === SANDBOX_WITH_CLOSURE) {
      const len = value[1] ?? 0;
      const closureHash = Buffer.from(value.subarray(2, 2 + len)).toString("latin1");
      return { result: ActionResult.decode(value.subarray(2 + len)), origin: "sandbox", closureHash };
    }
    const origin: ResultOrigin = value[0] === ORIGIN_BYTE.sandbox ? "sandbox" : "client";
    return { result: ActionResult.decode(value.subarray(1)), origin };
  } catch {
    return undefined;
  }
}

// NUL cannot occur in an instance name, so instance and digest never blur together.
function keyOf(instance: string, action: Digest): string {
  return `${instance}\0${digestKey(action)}`;
}

// lmdb's key encoding reads a string holding NUL back as the array of its parts, so both forms are accepted.
function parseKey(raw: unknown): { instance: string; action: Digest } | undefined {
  const key = Array.isArray(raw) ? raw.map(String).join("\0") : String(raw);
  const nul = key.lastIndexOf("\0");
  const [fn, hash, size] = key.slice(nul + 1).split(":");
  if (nul < 0 || fn === undefined || hash === undefined || !(DIGEST_FUNCTIONS as readonly string[]).includes(fn)) return undefined;
  const sizeBytes = Number(size);
  if (!Number.isSafeInteger(sizeBytes)) return undefined;
  return { instance: key.slice(0, nul), action: { fn: fn as DigestFn, hash, sizeBytes } };
}
