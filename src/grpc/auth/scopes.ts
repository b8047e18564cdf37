/**
 * What each RPC needs from a bearer token. Scopes are coarse on purpose: a
 * build client either only reads the cache, also fills it, or also runs
 * actions. `write` covers both CAS and action-cache writes, because a client
 * that may write results may as well write the blobs they point to.
 */
export const SCOPES = ["read", "write", "execute"] as const;
export type Scope = (typeof SCOPES)[number];

export function isScope(s: string): s is Scope {
  return (SCOPES as readonly string[]).includes(s);
}

/** `public`: callable without a token, so clients can learn what the server offers before they authenticate. */
export type Requirement = Scope | "public";

const REAPI = "/build.bazel.remote.execution.v2";
const BYTESTREAM = "/google.bytestream.ByteStream";

/** gRPC method path -> what it needs. A method missing here is refused (see requirementOf). */
const REQUIREMENTS: ReadonlyMap<string, Requirement> = new Map<string, Requirement>([
  [`${REAPI}.Capabilities/GetCapabilities`, "public"],
  [`${REAPI}.ContentAddressableStorage/FindMissingBlobs`, "read"],
  [`${REAPI}.ContentAddressableStorage/BatchReadBlobs`, "read"],
  [`${REAPI}.ContentAddressableStorage/GetTree`, "read"],
  [`${REAPI}.ContentAddressableStorage/BatchUpdateBlobs`, "write"],
  [`${BYTESTREAM}/Read`, "read"],
  [`${BYTESTREAM}/QueryWriteStatus`, "read"],
  [`${BYTESTREAM}/Write`, "write"],
  [`${REAPI}.ActionCache/GetActionResult`, "read"],
  [`${REAPI}.ActionCache/UpdateActionResult`, "write"],
  [`${REAPI}.Execution/Execute`, "execute"],
  [`${REAPI}.Execution/WaitExecution`, "execute"],
]);

/**
 * The scope a method needs, or undefined for a method nobody has classified:
 * such a method (one added later, say) is refused to every token rather than
 * silently left open.
 */
export function requirementOf(methodPath: string): Requirement | undefined {
  return REQUIREMENTS.get(methodPath);
}
