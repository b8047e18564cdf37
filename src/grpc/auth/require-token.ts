import * as grpc from "@grpc/grpc-js";
import { isUnixPeer } from "../peer";
import type { ServiceEntry } from "../service-entry";
import { type Requirement, requirementOf } from "./scopes";
import type { TokenTable } from "./token-table";

/**
 * Wraps every handler of a service so calls must carry `authorization: Bearer
 * TOKEN` with a token from `tokens` whose scopes cover the method
 * (scopes.ts). Calls over lre's Unix socket pass unchecked: only the owner of
 * the socket can connect to it. The check runs before the handler sees the
 * call, so a refused call never touches the store.
 */
export function requireToken(entry: ServiceEntry, tokens: TokenTable): ServiceEntry {
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(entry.implementation)) {
    const path = entry.definition[name]?.path ?? `(unknown method ${name})`;
    implementation[name] = guard(handler as (...args: unknown[]) => unknown, path, tokens);
  }
  return { definition: entry.definition, implementation };
}

interface GuardedCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  emit(event: string, ...args: unknown[]): unknown;
}

function guard(handler: (...args: unknown[]) => unknown, path: string, tokens: TokenTable): grpc.UntypedHandleCall {
  const method = path.slice(path.lastIndexOf("/") + 1);
  const requirement = requirementOf(path);
  // grpc-js tells handler kinds apart by arity, so keep (call, callback) and (call) apart.
  const wrapped = function (call: GuardedCall, callback?: (...a: unknown[]) => void) {
    const refusal = isUnixPeer(call.getPeer()) ? undefined : check(call.metadata, method, requirement, tokens);
    if (refusal === undefined) return callback === undefined ? handler(call) : handler(call, callback);
    // Streaming calls take their status from an "error" event (grpc-js server-call.js).
    if (callback !== undefined) callback(refusal, null);
    else call.emit("error", refusal);
    return undefined;
  };
  return wrapped as unknown as grpc.UntypedHandleCall;
}

const HOW_TO_SEND =
  "send the header authorization: Bearer TOKEN with a token from lre's --token-file (Bazel: --remote_header=authorization=Bearer TOKEN; Buck2: http_headers = authorization: Bearer TOKEN)";

function check(
  metadata: grpc.Metadata,
  method: string,
  requirement: Requirement | undefined,
  tokens: TokenTable,
): Partial<grpc.StatusObject> | undefined {
  if (requirement === "public") return undefined;
  const values = metadata.get("authorization");
  if (values.length === 0) return unauthenticated(`${method} needs a bearer token: ${HOW_TO_SEND}`);
  if (values.length > 1) return unauthenticated(`the call carries ${values.length} authorization headers; send exactly one`);
  const value = values[0];
  const match = typeof value === "string" ? /^Bearer +(\S+) *$/i.exec(value) : null;
  if (match === null) return unauthenticated(`the authorization header is not of the form "Bearer TOKEN"; ${HOW_TO_SEND}`);
  const scopes = tokens.scopesOf(match[1] as string);
  if (scopes === undefined) return unauthenticated(`the bearer token is not one lre accepts; ${HOW_TO_SEND}`);
  if (requirement === undefined) {
    return { code: grpc.status.PERMISSION_DENIED, details: `${method} is not open to token holders on this listener` };
  }
  if (!scopes.has(requirement)) {
    const held = scopes.size === 0 ? "none" : [...scopes].join(",");
    return {
      code: grpc.status.PERMISSION_DENIED,
      details: `${method} needs the "${requirement}" scope; this token has ${held} (add ${requirement} to its line in the token file)`,
    };
  }
  return undefined;
}

function unauthenticated(details: string): Partial<grpc.StatusObject> {
  return { code: grpc.status.UNAUTHENTICATED, details };
}
