/**
 * HTTP/2 receive windows for lre's server: how much a client may send before
 * the server acknowledges it with a WINDOW_UPDATE.
 *
 * grpc-js passes no window settings to its HTTP/2 server, so Bun grants the
 * RFC 9113 default of 65,535 bytes per stream and per connection. A ByteStream
 * Write of 64 KiB messages then stops after every message until the server's
 * WINDOW_UPDATE has made the round trip through the shim (unix-listener.ts) and
 * the client's event loop. Measured on a 512 MiB Write (Bun 1.4.5, 2 cores):
 * the server sent 6,600 WINDOW_UPDATE frames per 128 MiB, each its own
 * socket write, and the upload ran at 92-95 MiB/s; with the windows below it
 * sends 17 and the transfer is bound by CPU instead of round trips.
 *
 * Memory: Bun acknowledges DATA as it parses it, not as the handler consumes
 * it, so these windows bound bytes in flight on the wire, not what grpc-js
 * queues; the ByteStream handler keeps up because it no longer waits for each
 * disk write (lmdb-blob-store.ts FileWriter).
 *
 * Neither grpc-js nor its server options expose the settings, so they are set
 * on the HTTP/2 server grpc-js creates for a connection injector, through two
 * grpc-js 1.14 internals: `commonServerOptions.settings` (read when the
 * injector's HTTP/2 server is created) and `http2Servers` (to reach that
 * server's sessions). If a grpc-js upgrade renames them, the defaults stay in
 * force (slower, still correct) and test/grpc/receive-window.test.ts fails.
 */
import type * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";

const MiB = 1024 * 1024;
/** SETTINGS_INITIAL_WINDOW_SIZE lre announces: per-stream receive window. */
export const STREAM_RECEIVE_WINDOW = 8 * MiB;
/** Connection-level receive window, shared by all streams of a connection. */
export const CONNECTION_RECEIVE_WINDOW = 16 * MiB;

interface GrpcServerInternals {
  commonServerOptions?: { settings?: http2.Settings | undefined };
  http2Servers?: Map<http2.Http2Server, unknown>;
}

/**
 * `server.createConnectionInjector`, with the HTTP/2 server behind it granting
 * clients STREAM_RECEIVE_WINDOW per stream and CONNECTION_RECEIVE_WINDOW per
 * connection.
 */
export function createWideWindowInjector(server: grpc.Server, credentials: grpc.ServerCredentials): grpc.ConnectionInjector {
  const internals = server as unknown as GrpcServerInternals;
  const options = internals.commonServerOptions;
  const saved = options?.settings;
  const before = new Set(internals.http2Servers?.keys() ?? []);
  if (options !== undefined) options.settings = { ...saved, initialWindowSize: STREAM_RECEIVE_WINDOW };
  let injector: grpc.ConnectionInjector;
  try {
    injector = server.createConnectionInjector(credentials);
  } finally {
    // Only this injector's server gets the settings; other listeners keep grpc-js's own.
    if (options !== undefined) {
      if (saved === undefined) delete options.settings;
      else options.settings = saved;
    }
  }
  for (const h2 of internals.http2Servers?.keys() ?? []) {
    if (before.has(h2)) continue;
    h2.on("session", (session: http2.ServerHttp2Session) => {
      try {
        session.setLocalWindowSize(CONNECTION_RECEIVE_WINDOW);
      } catch {
        // An already closed session: nothing to widen.
      }
    });
  }
  return injector;
}
