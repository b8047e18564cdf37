import type { BlobStore, BlobWriter } from "../cas/blob-store";
import { type Digest, digestKey, formatDigest } from "../digest/digest";
import type { UploadResource } from "../digest/resource-name";
import { GrpcCode, RpcError } from "../errors";

/**
 * Partial ByteStream uploads, kept between Write calls so a client can ask
 * QueryWriteStatus how far it got and continue from there (Bazel 4.2.3 does
 * this after a broken stream). A session lives from the first Write until it
 * commits, fails on bad data, or sits idle for `idleMs`; expiry aborts the
 * writer, so an abandoned upload leaves no temp data behind.
 */
export interface UploadSession {
  readonly key: string;
  readonly digest: Digest;
  writer: BlobWriter;
}

interface Entry {
  session: UploadSession;
  busy: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class UploadSessions {
  private readonly entries = new Map<string, Entry>();
  /** Keys whose writer is being created, so a second claim cannot race the first. */
  private readonly opening = new Set<string>();
  private closed = false;

  constructor(
    private readonly cas: BlobStore,
    private readonly idleMs: number,
  ) {}

  /** Sessions are per upload id and blob; compressed and plain writes of one id share the uncompressed offset. */
  static keyOf(upload: UploadResource): string {
    return `${upload.instance}\0${upload.uuid}\0${digestKey(upload.digest)}`;
  }

  get size(): number {
    return this.entries.size + this.opening.size;
  }

  /** Bytes held for an idle or active session, or undefined when there is none. */
  committedSize(key: string): number | undefined {
    return this.entries.get(key)?.session.writer.bytesWritten;
  }

  /**
   * Takes a session for one Write stream, creating it if needed. Two streams
   * may not feed one session at once: the second gets ABORTED, which clients
   * retry after the first one ends.
   */
  async claim(key: string, digest: Digest): Promise<UploadSession> {
    if (this.closed) throw new RpcError(GrpcCode.UNAVAILABLE, "the server is shutting down; retry the upload");
    const existing = this.entries.get(key);
    if (existing !== undefined || this.opening.has(key)) {
      if (existing === undefined || existing.busy) {
        throw new RpcError(
          GrpcCode.ABORTED,
          `another Write for ${formatDigest(digest)} with this upload id is still running; retry when it ends or use a new upload id`,
        );
      }
      existing.busy = true;
      clearTimeout(existing.timer);
      existing.timer = undefined;
      return existing.session;
    }
    this.opening.add(key);
    try {
      const writer = await this.cas.beginWrite(digest);
      const session: UploadSession = { key, digest, writer };
      if (this.closed) {
        await writer.abort();
        throw new RpcError(GrpcCode.UNAVAILABLE, "the server is shutting down; retry the upload");
      }
      this.entries.set(key, { session, busy: true, timer: undefined });
      return session;
    } finally {
      this.opening.delete(key);
    }
  }

  /** Throws away what a session holds and starts again from offset 0 (a client restarting its upload). */
  async restart(session: UploadSession): Promise<void> {
    await session.writer.abort();
    session.writer = await this.cas.beginWrite(session.digest);
  }

  /** Ends a stream without finishing: the bytes stay for a resume until the session idles out. */
  release(session: UploadSession): void {
    const entry = this.entries.get(session.key);
    if (entry === undefined || entry.session !== session) return;
    entry.busy = false;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => void this.expire(session.key), this.idleMs);
    // An idle session must not keep the process alive on its own.
    entry.timer.unref?.();
  }

  /** Forgets a session after commit or a data error, aborting its writer (a no-op after commit). */
  async discard(session: UploadSession): Promise<void> {
    const entry = this.entries.get(session.key);
    if (entry !== undefined && entry.session === session) {
      clearTimeout(entry.timer);
      this.entries.delete(session.key);
    }
    await session.writer.abort();
  }

  /** Drops an idle session for a blob that became present meanwhile. Busy sessions are left to their stream. */
  async discardIdle(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (entry !== undefined && !entry.busy) await this.discard(entry.session);
  }

  /** Aborts every session; called on shutdown. */
  async close(): Promise<void> {
    this.closed = true;
    const sessions = [...this.entries.values()];
    this.entries.clear();
    await Promise.allSettled(
      sessions.map((e) => {
        clearTimeout(e.timer);
        return e.session.writer.abort();
      }),
    );
  }

  private async expire(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.busy) return;
    this.entries.delete(key);
    try {
      await entry.session.writer.abort();
    } catch {
      // Abort only frees temp data; a failure here leaves nothing a client can see.
    }
  }
}
