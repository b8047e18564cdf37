/**
 * Who is on the other end of a connection, as grpc-js reports it through
 * `call.getPeer()`. lre injects connections into grpc-js itself
 * (unix-listener.ts), so the object grpc-js sees is our shim, which has no
 * address of its own; labelPeer gives it one. Unix-socket connections are
 * labelled `unix:PATH`, which no TCP peer (an IP address) can ever be, so a
 * handler can tell them apart and trust the first by file permissions.
 */
const UNIX_PREFIX = "unix:";

/** Makes grpc-js report `address` (and `port`) as the peer of calls on `connection`. */
export function labelPeer(connection: object, address: string | undefined, port?: number): void {
  Object.defineProperty(connection, "remoteAddress", { value: address, configurable: true });
  Object.defineProperty(connection, "remotePort", { value: port, configurable: true });
}

export function unixPeerAddress(socketPath: string): string {
  return `${UNIX_PREFIX}${socketPath}`;
}

/** True only for calls that came in over lre's own Unix socket; an unlabelled peer ("unknown") is not. */
export function isUnixPeer(peer: string): boolean {
  return peer.startsWith(UNIX_PREFIX);
}
