import { chmodSync, lstatSync, mkdirSync, statSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname } from "node:path";
import { CliError, errnoOf, messageOf } from "./cli-error";
import type { Logger } from "./logger";

/**
 * The Unix socket is lre's front door and its only access control: whoever can
 * connect can run actions as this user. So it is created 0600 inside a 0700
 * directory, and a socket left by a crashed server is cleaned up, while one
 * still answered by a live server is never taken over.
 */

/** sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

export type SocketState = "absent" | "stale" | "live";

/** Whether something answers on `path`: ECONNREFUSED means a socket file with no server behind it. */
export function probeSocket(path: string, timeoutMs = 2000): Promise<SocketState> {
  return new Promise((resolve, reject) => {
    const conn = connect({ path });
    const timer = setTimeout(() => {
      conn.destroy();
      // A server that accepted nothing in time still holds the socket.
      resolve("live");
    }, timeoutMs);
    conn.once("connect", () => {
      clearTimeout(timer);
      conn.destroy();
      resolve("live");
    });
    conn.once("error", (err) => {
      clearTimeout(timer);
      const code = errnoOf(err);
      if (code === "ECONNREFUSED") resolve("stale");
      else if (code === "ENOENT") resolve("absent");
      else reject(new CliError(`cannot check socket "${path}": ${messageOf(err)}`));
    });
  });
}

/** Makes `path` ready to bind: private directory, no stale socket, no live server. */
export async function prepareSocketPath(path: string, log: Logger): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new CliError(
      `socket path "${path}" is ${Buffer.byteLength(path)} bytes; Unix sockets allow at most ${MAX_SOCKET_PATH_BYTES}. Choose a shorter --socket`,
    );
  }
  ensurePrivateDir(dirname(path), log);

  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return;
    throw new CliError(`cannot inspect socket path "${path}": ${messageOf(err)}`);
  }
  if (!isSocket) {
    throw new CliError(`"${path}" exists and is not a socket; remove it or choose another --socket`);
  }
  const state = await probeSocket(path);
  if (state === "live") {
    throw new CliError(
      `another server is already listening on "${path}"; stop it, or start this one with another --socket`,
    );
  }
  if (state === "stale") {
    log.info(`removing stale socket "${path}" left by a server that is no longer running`);
    unlinkSync(path);
  }
}

/**
 * Creates the socket directory 0700. An existing directory owned by someone
 * else or shared with others is left alone (chmod-ing /tmp or a project dir
 * would be worse) and reported; the 0600 socket still keeps others out.
 */
export function ensurePrivateDir(dir: string, log: Logger): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new CliError(`cannot create socket directory "${dir}": ${messageOf(err)}`);
  }
  const st = statSync(dir);
  const uid = process.getuid?.();
  if ((st.mode & 0o077) !== 0) {
    if (st.uid === uid && (st.mode & 0o1000) === 0 && dirIsOurs(dir)) {
      chmodSync(dir, 0o700);
    } else {
      log.warn(`socket directory "${dir}" is accessible to other users (mode ${(st.mode & 0o7777).toString(8)}); the socket itself is 0600`);
    }
  }
}

// Directories lre creates for itself end in "/lre"; only those are tightened.
function dirIsOurs(dir: string): boolean {
  return /(^|\/)lre$/.test(dir);
}

/** Runs `bind` with umask 0177 so the socket is never, even briefly, open to others; then sets 0600 explicitly. */
export async function bindPrivately<T>(path: string, bind: () => Promise<T>): Promise<T> {
  const old = process.umask(0o177);
  let result: T;
  try {
    result = await bind();
  } finally {
    process.umask(old);
  }
  chmodSync(path, 0o600);
  return result;
}

/** Removes our socket on shutdown; a missing file is fine. */
export function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}
