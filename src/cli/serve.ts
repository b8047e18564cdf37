import type { ServeConfig } from "../config/config";
import { formatDuration } from "../config/duration";
import { formatSize } from "../config/size";
import { CliError, messageOf } from "./cli-error";
import type { Backend, RunningServer, Storage } from "./contracts";
import type { RunningExecution } from "./execution";
import { ensureWritableDir } from "./data-dir";
import { createLogger } from "./logger";
import { bindPrivately, prepareSocketPath, removeSocket } from "./socket";
import { loadTcpSecurity } from "./tcp-security";
import { type RunningUpstream, startUpstream } from "../upstream/start-upstream";

/** Output of `lre serve` that is meant for people and scripts (the address line). */
export interface ServeIo {
  stdout(line: string): void;
}

/**
 * `lre serve`: wiring only. Opens the store, starts the gRPC server on the
 * socket (and TCP if asked), then waits for SIGINT/SIGTERM and shuts down in
 * order: stop accepting, let running calls finish within the grace period,
 * close the store (flushing LMDB), remove the socket.
 */
export async function runServe(cfg: ServeConfig, backend: Backend, io: ServeIo): Promise<number> {
  const log = createLogger(cfg.logLevel);
  // Listen for signals before anything exists, so a signal that arrives while
  // starting up still takes the orderly path below instead of killing us.
  const stopRequested = nextSignal(() => log.warn("second signal: stopping now without waiting for running work"));
  ensureWritableDir(cfg.dataDir);
  // Before anything is opened: a bad certificate or token file is a startup error.
  const security = loadTcpSecurity(cfg.tcpSecurity);
  await prepareSocketPath(cfg.socketPath, log);

  let storage: Storage;
  try {
    storage = await backend.openStorage({ dataDir: cfg.dataDir, maxBytes: cfg.maxCacheBytes, protectMs: cfg.protectMs, serving: true });
  } catch (err) {
    throw new CliError(`cannot open the store in data dir "${cfg.dataDir}": ${messageOf(err)}`);
  }

  const digests = { defaultDigestFn: cfg.digestFunction, instanceDigestFn: { ...cfg.instanceDigestFunctions } };
  let upstream: RunningUpstream | undefined;
  if (cfg.upstream !== undefined) {
    try {
      upstream = await startUpstream(cfg.upstream, storage, { dataDir: cfg.dataDir, digests, log });
    } catch (err) {
      await storage.close();
      throw new CliError(`cannot use upstream "${cfg.upstream.url}": ${messageOf(err)}`);
    }
  }
  // With an upstream, everything below reads through it and writes behind to it.
  storage = upstream?.storage ?? storage;

  let execution: RunningExecution | undefined;
  if (cfg.exec.enabled) {
    try {
      execution = await backend.startExecution(cfg, storage, log);
    } catch (err) {
      await upstream?.close();
      await storage.close();
      if (err instanceof CliError) throw err; // already names what to fix
      throw new CliError(`cannot start the executor with data dir "${cfg.dataDir}": ${messageOf(err)}`);
    }
  }

  const executionService = upstream === undefined ? execution?.service : upstream.execution(execution?.service);
  let server: RunningServer;
  try {
    server = await bindPrivately(cfg.socketPath, () =>
      backend.startServer({
        cas: storage.cas,
        ac: execution?.ac ?? storage.ac,
        digests,
        execEnabled: executionService !== undefined,
        ...(executionService === undefined ? {} : { extraServices: [executionService] }),
        onAcLookup: (hit) => storage.recordAcLookup(hit),
        listen: { socketPath: cfg.socketPath, ...(cfg.tcp === undefined ? {} : { tcp: cfg.tcp }) },
        ...security,
      }),
    );
  } catch (err) {
    await upstream?.close();
    await storage.close();
    removeSocket(cfg.socketPath);
    const where = cfg.tcp === undefined ? `"${cfg.socketPath}"` : `"${cfg.socketPath}" and ${cfg.tcp.host}:${cfg.tcp.port}`;
    throw new CliError(`cannot listen on ${where}: ${messageOf(err)}`);
  }

  const endpoints = [`unix://${cfg.socketPath}`];
  if (server.tcpAddress !== undefined) endpoints.push(`${security.tls === undefined ? "grpc" : "grpcs"}://${server.tcpAddress}`);
  if (server.tcpAddress !== undefined) log.info(describeTcpGuard(security));
  if (cfg.upstream !== undefined) log.info(`fronting upstream ${cfg.upstream.url} (execute ${cfg.upstream.execute})`);
  io.stdout(`lre listening on ${endpoints.join(" and ")}, data dir ${cfg.dataDir}`);
  log.debug(
    `cache limit ${formatSize(cfg.maxCacheBytes)}, blobs used within ${formatDuration(cfg.protectMs)} protected, ${cfg.exec.enabled ? `execution on, ${cfg.exec.jobs} jobs` : "execution off"}, default digest ${cfg.digestFunction}`,
  );

  const signal = await stopRequested;
  log.info(`${signal} received: finishing running work (up to ${cfg.graceMs / 1000} s), then exiting`);
  await server.shutdown(cfg.graceMs);
  execution?.close();
  await upstream?.close();
  await storage.close();
  removeSocket(cfg.socketPath);
  log.info("stopped");
  return 0;
}

function describeTcpGuard(s: ReturnType<typeof loadTcpSecurity>): string {
  const transport = s.tls === undefined ? "plaintext" : s.tls.clientCa === undefined ? "TLS" : "TLS with client certificates";
  const tokens = s.tokens === undefined ? "no bearer tokens" : `${s.tokens.size} bearer token(s) required`;
  return `TCP listener: ${transport}, ${tokens}`;
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once, for an operator who cannot wait. */
function nextSignal(onSecond: () => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let seen = false;
    const handler = (sig: NodeJS.Signals) => {
      if (seen) {
        onSecond();
        process.exit(1);
      }
      seen = true;
      resolve(sig);
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
  });
}
