/**
 * The Unix-socket listener: accepts connections itself and hands them to
 * grpc-js through a connection injector, with the client's bytes run through
 * AuthorityFilter on the way in (see authority-filter.ts for why: Bazel's
 * `unix://` channels send the socket path as `:authority`, which Bun's HTTP/2
 * server refuses). Replies go straight to the socket. TCP connections take
 * the same path (listenTcp), because every connection, whatever its transport,
 * also needs InitialWindowRepair (initial-window-repair.ts): without it Bun
 * stalls large ByteStream Reads from grpc-go clients.
 *
 * Cost: Bun's HTTP/2 session does its socket I/O natively when handed a real
 * socket; through this Duplex both directions go through JS, which measured
 * 15-25% less ByteStream throughput on a loaded 2-core machine. Filtering the
 * socket's "data" events instead does not work: Bun 1.4.5 reads a real socket
 * natively and never emits them to the session.
 */
import * as net from "node:net";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { AuthorityFilter } from "./authority-filter";
import { InitialWindowRepair } from "./initial-window-repair";
import { createWideWindowInjector } from "./receive-window";
import { labelPeer, unixPeerAddress } from "./peer";
import { type TlsMaterial, tlsServerOptions } from "./tls";

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
  const peer = unixPeerAddress(path);
  return listenFiltered(server, (l, done) => l.listen(path, done), { peer: () => ({ address: peer }) }).then(({ listener }) => listener);
}

/**
 * Listens on TCP `host:port` (port 0: any free one) the same way, so TCP clients
 * get the same flow-control repair (initial-window-repair.ts). Resolves to the bound port.
 * With `secure`, connections speak TLS, decrypted here before the shim (tls.ts).
 */
export async function listenTcp(
  server: grpc.Server,
  host: string,
  port: number,
  secure?: TlsMaterial,
): Promise<{ listener: UnixListener; port: number }> {
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  return listenFiltered(server, (l, done) => l.listen(port, bare, done), {
    peer: (socket) => ({ address: socket.remoteAddress, ...(socket.remotePort === undefined ? {} : { port: socket.remotePort }) }),
    ...(secure === undefined ? {} : { secure }),
  });
}

interface ListenOptions {
  /** The peer grpc-js reports for calls on a connection (peer.ts). */
  peer: (socket: net.Socket) => { address: string | undefined; port?: number };
  secure?: TlsMaterial;
}

/** A TLS handshake that has not finished by then is dropped, so half-open connections cannot pile up. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

function listenFiltered(
  server: grpc.Server,
  start: (listener: net.Server, done: () => void) => void,
  o: ListenOptions,
): Promise<{ listener: UnixListener; port: number }> {
  const injector = createWideWindowInjector(server, grpc.ServerCredentials.createInsecure());
  const open = new Set<net.Socket>();
  const inject = (socket: net.Socket) => {
    const filtered = new FilteredSocket(socket);
    const peer = o.peer(socket);
    labelPeer(filtered, peer.address, peer.port);
    injector.injectConnection(filtered);
  };
  const listener =
    o.secure === undefined
      ? net.createServer({ allowHalfOpen: true }, inject)
      : tls.createServer({ ...tlsServerOptions(o.secure), allowHalfOpen: true, handshakeTimeout: HANDSHAKE_TIMEOUT_MS }, inject);
  // Counted from the raw connection, so close() also ends those still in their TLS handshake.
  listener.on("connection", (socket: net.Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
  });
  // A failed handshake (wrong CA, no client certificate) only ends that connection.
  listener.on("tlsClientError", () => {});
  return new Promise((resolve, reject) => {
    listener.once("error", reject);
    start(listener, () => {
      listener.off("error", reject);
      const address = listener.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      resolve({
        port,
        listener: {
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
        },
      });
    });
  });
}

/**
 * A socket whose incoming bytes pass through an AuthorityFilter and an
 * InitialWindowRepair; the repair also watches the outgoing bytes.
 */
class FilteredSocket extends Duplex {
  private readonly authority = new AuthorityFilter();
  private readonly window = new InitialWindowRepair();

  constructor(private readonly socket: net.Socket) {
    super({ allowHalfOpen: true });
    socket.on("data", (chunk: Buffer) => {
      let more = true;
      for (const piece of this.authority.push(chunk)) {
        for (const part of this.window.fromClient(piece)) more = this.push(part);
      }
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
    this.window.fromServer(chunk);
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
