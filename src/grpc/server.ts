import * as grpc from "@grpc/grpc-js";
import type { ActionCache } from "../ac/action-cache";
import type { BlobStore } from "../cas/blob-store";
import type { DigestConfig } from "../digest/instance-name";
import { GrpcCode, RpcError } from "../errors";
import { requireToken } from "./auth/require-token";
import type { TokenTable } from "./auth/token-table";
import { CallTracker } from "./call-tracker";
import { createAcService } from "./ac-service";
import { createByteStreamService } from "./bytestream-service";
import { createCapabilitiesService } from "./capabilities-service";
import { createCasService } from "./cas-service";
import type { ServiceEntry } from "./service-entry";
import type { TlsMaterial } from "./tls";
import { listenTcp, listenUnix, type UnixListener } from "./unix-listener";

export type { ServiceEntry } from "./service-entry";

export interface ServerConfig {
  cas: BlobStore;
  ac: ActionCache;
  digests: DigestConfig;
  /** Advertised in GetCapabilities; the Execution service itself comes through `extraServices`. */
  execEnabled: boolean;
  onAcLookup?: (hit: boolean) => void;
  /** Further services to mount, such as Execution. */
  extraServices?: ServiceEntry[];
  /** At least one of the two. The socket's directory and permissions are the caller's business. */
  listen: { socketPath?: string; tcp?: { host: string; port: number } };
  /** How long an interrupted ByteStream upload may wait for its client to resume. Default 10 minutes. */
  uploadIdleMs?: number;
  /** Serve TLS (and with `clientCa`, require client certificates) on the TCP listener. */
  tls?: TlsMaterial;
  /** Require a bearer token from this table on every TCP call but GetCapabilities; Unix-socket calls need none. */
  tokens?: TokenTable;
}

export interface RunningServer {
  socketPath?: string;
  /** `host:port` actually bound (the real port when 0 was asked for); IPv6 hosts in brackets. */
  tcpAddress?: string;
  /** Stops accepting calls, lets running ones finish for up to `graceMs`, then cuts the rest. Idempotent. */
  shutdown(graceMs: number): Promise<void>;
}

const MiB = 1024 * 1024;

/**
 * grpc-js defaults are loose in some places and too tight in others
 * (reliability-targets.md §7, reapi-clients.md §8):
 * - receive limit: 4 MiB by default, but a batch at exactly the advertised
 *   4,000,000 bytes overflows that once framed (buck2#563), so allow 16 MiB;
 * - send limit: unlimited by default; replies never need more than a batch;
 * - keepalive: Buck2 pings every 30 s even when idle, and a GOAWAY
 *   too_many_pings would kill its builds. grpc-js servers do not police pings,
 *   and these settings say so for any transport that would;
 * - concurrent streams: bounded so one connection cannot open unlimited calls.
 */
export const SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": 16 * MiB,
  "grpc.max_send_message_length": 16 * MiB,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 1000,
  "grpc.http2.max_ping_strikes": 0,
  "grpc.max_concurrent_streams": 1000,
};

/** How long replies already sent get to reach clients once the grace period is over. */
const FLUSH_MS = 1000;

export async function startServer(c: ServerConfig): Promise<RunningServer> {
  const { socketPath, tcp } = c.listen;
  if (socketPath === undefined && tcp === undefined) {
    throw new TypeError("startServer needs listen.socketPath, listen.tcp or both");
  }

  const server = new grpc.Server(SERVER_OPTIONS);
  const bytestream = createByteStreamService({
    cas: c.cas,
    digests: c.digests,
    ...(c.uploadIdleMs === undefined ? {} : { uploadIdleMs: c.uploadIdleMs }),
  });
  const services: ServiceEntry[] = [
    createCapabilitiesService({ execEnabled: c.execEnabled }),
    createCasService({ cas: c.cas, digests: c.digests }),
    bytestream,
    createAcService({
      ac: c.ac,
      cas: c.cas,
      digests: c.digests,
      ...(c.onAcLookup === undefined ? {} : { onAcLookup: c.onAcLookup }),
    }),
    ...(c.extraServices ?? []),
  ];
  const calls = new CallTracker();
  for (const s of services) {
    const tracked = calls.wrap(c.tokens === undefined ? s : requireToken(s, c.tokens));
    server.addService(tracked.definition, tracked.implementation);
  }

  const running: RunningServer = { shutdown: () => Promise.resolve() };
  // Not bound through grpc-js: Bazel's unix:// :authority needs a filter first (unix-listener.ts).
  let unix: UnixListener | undefined;
  // TCP the same way: every connection goes through the flow-control repair (initial-window-repair.ts).
  let tcpListener: UnixListener | undefined;
  try {
    if (socketPath !== undefined) {
      unix = await listenUnix(server, socketPath).catch((err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        throw new RpcError(GrpcCode.UNAVAILABLE, `cannot listen on unix://${socketPath}: ${message}`, { cause: err });
      });
      running.socketPath = socketPath;
    }
    if (tcp !== undefined) {
      const host = tcp.host.includes(":") && !tcp.host.startsWith("[") ? `[${tcp.host}]` : tcp.host;
      const bound = await listenTcp(server, host, tcp.port, c.tls).catch((err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        throw new RpcError(GrpcCode.UNAVAILABLE, `cannot listen on ${host}:${tcp.port}: ${message}`, { cause: err });
      });
      tcpListener = bound.listener;
      running.tcpAddress = `${host}:${bound.port}`;
    }
  } catch (err) {
    server.forceShutdown();
    await unix?.close(0);
    await tcpListener?.close(0);
    await bytestream.close();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  running.shutdown = (graceMs) => {
    stopping ??= (async () => {
      // Refuse new calls and give those already running the grace period.
      // The listeners stay bound until then: under Bun's http2, closing a
      // listener (grpc-js unbind) also drops its open connections, which
      // would cut off the very uploads the grace period is for.
      await calls.drain(graceMs);
      // Connections end as their sessions close below; none outlives the flush time.
      const unixClosed = unix?.close(FLUSH_MS);
      const tcpClosed = tcpListener?.close(FLUSH_MS);
      // The last replies may still be in flight: close sessions gracefully so
      // they are flushed, and cut off whatever is left after a short wait.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, FLUSH_MS);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await unixClosed;
      await tcpClosed;
      await bytestream.close();
    })();
    return stopping;
  };
  return running;
}
