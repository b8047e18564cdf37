/**
 * The Unix-socket listener: accepts connections itself and hands them to
 * grpc-js through a connection injector, with the client's bytes run through
 * AuthorityFilter on the way in (see authority-filter.ts for why: Bazel's
 * `unix://` channels send the socket path as `:authority`, which Bun's HTTP/2
 * server refuses). Replies go straight to the socket.
 *
 * Cost: Bun's HTTP/2 session does its socket I/O natively when handed a real
 * socket; through this Duplex both directions go through JS, which measured
 * 15-25% less ByteStream throughput on a loaded 2-core machine. Filtering the
 * socket's "data" events instead does not work: Bun 1.4.5 reads a real socket
 * natively and never emits them to the session.
 */
import * as net from "node:net";
import { Duplex } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { AuthorityFilter } from "./authority-filter";

export interface UnixListener {
  /**
   * Stops accepting connections and resolves once every open one has ended,
   * cutting off those still open after `graceMs`. Closing gRPC sessions is the
   * server's business; this only makes sure no socket outlives it.
   */
  close(graceMs: number): Promise<void>;
}

/** Listens on `path` (which must not exist) and serves `server`'s services there. */
export function listenUnix(server: grpc.Server, path: string): Promise<UnixListener> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const open = new Set<net.Socket>();
  const listener = net.createServer({ allowHalfOpen: true }, (socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    injector.injectConnection(new FilteredSocket(socket));
  });
  return new Promise((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(path, () => {
      listener.off("error", reject);
      resolve({
        close: async (graceMs) => {
          const closed = new Promise<void>((done) => listener.close(() => done()));
          const ended = [...open].map((socket) => new Promise((done) => socket.once("close", done)));
          const timer = setTimeout(() => {
            for (const socket of open) socket.destroy();
          }, graceMs);
          await Promise.all(ended);
          clearTimeout(timer);
          await closed;
        },
      });
    });
  });
}

/** A socket whose incoming bytes pass through an AuthorityFilter. */
class FilteredSocket extends Duplex {
  private readonly authority = new AuthorityFilter();

  constructor(private readonly socket: net.Socket) {
    super({ allowHalfOpen: true });
    socket.on("data", (chunk: Buffer) => {
      let more = true;
      for (const piece of this.authority.push(chunk)) more = this.push(piece);
      if (!more) socket.pause();
    });
    socket.once("end", () => this.push(null));
    socket.once("error", (err) => this.destroy(err));
    socket.once("close", () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.socket.write(chunk, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.socket.end(done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.socket.destroy();
    done(err);
  }
}
