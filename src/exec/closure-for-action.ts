import { RpcError } from "../errors";
import type { Action, Command, Platform } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Closure } from "../../sandbox/spec";
import { UnknownStorePathError, findStorePathRefs } from "../../sandbox/mod";

/** The platform property naming an action's Nix closure roots (whitespace-separated store paths). */
export const CLOSURE_PROPERTY = "nix-closure";

const STORE_DIR = "/nix/store/";

/** Anything that can turn closure roots into a closure: sandbox's ClosureResolver, in production. */
export interface ClosureSource {
  resolve(roots: string[]): Closure;
}

export interface ClosureRoots {
  readonly roots: readonly string[];
  /** Where the roots came from, for error messages. */
  readonly source: "platform" | "command" | "server default";
}

/**
 * The store paths an action declares, and so the only ones its sandbox sees:
 * the `nix-closure` platform property (Action.platform, else Command.platform,
 * which is the only one Buck2 fills), plus every store path named in argv or
 * environment values, since a command naming `/nix/store/…-gcc/bin/gcc`
 * plainly needs it. With none of those, the server's default roots apply.
 */
export function closureRootsFor(action: Action, command: Command, defaults: readonly string[]): ClosureRoots {
  const declared = platformRoots(action.platform) ?? platformRoots(command.platform) ?? [];
  const named = [
    ...command.arguments.flatMap((a) => findStorePathRefs(a)),
    ...command.environmentVariables.flatMap((e) => findStorePathRefs(e.value)),
  ];
  const roots = unique([...declared, ...named].map(storePathOf));
  if (roots.length > 0) return { roots, source: declared.length > 0 ? "platform" : "command" };
  return { roots: unique(defaults.map(storePathOf)), source: "server default" };
}

/**
 * Resolves roots to their closure. A root Nix does not know is the client's to
 * fix, so it is FAILED_PRECONDITION naming the path and how to get it built.
 */
export function resolveClosure(source: ClosureSource, roots: ClosureRoots): Closure {
  try {
    return source.resolve([...roots.roots]);
  } catch (err) {
    if (err instanceof UnknownStorePathError) {
      throw RpcError.failedPrecondition(
        `store path "${err.path}" (from the ${describe(roots.source)}) is not a valid path in this machine's Nix store; ` +
          `build or fetch it first (e.g. \`nix-store --realise ${err.path}\` or \`nix build\` of the derivation that produces it), then retry`,
      );
    }
    throw err;
  }
}

/**
 * Store paths an action referred to that its sandbox could not see: scanned
 * in its argv, environment and stderr after a failure, so the response can say
 * which path to declare instead of leaving a bare "No such file or directory".
 */
export function undeclaredStorePaths(closure: Closure, texts: readonly string[]): string[] {
  const visible = new Set(closure.paths);
  return unique(texts.flatMap((t) => findStorePathRefs(t)).map(storePathOf)).filter((p) => !visible.has(p));
}

/** A hint for ExecuteResponse.message about undeclared store paths. */
export function undeclaredPathsMessage(paths: readonly string[]): string {
  if (paths.length === 0) return "";
  const list = paths.slice(0, 5).join(", ");
  return (
    `The action referred to ${paths.length === 1 ? "store path" : "store paths"} ${list}, outside its Nix closure, ` +
    `so the sandbox did not contain ${paths.length === 1 ? "it" : "them"}. Declare ${paths.length === 1 ? "it" : "them"} ` +
    `in the platform property "${CLOSURE_PROPERTY}" (whitespace-separated store paths; in Bazel: ` +
    `exec_properties = {"${CLOSURE_PROPERTY}": "${paths.join(" ")}"}).`
  );
}

function platformRoots(platform: Platform | undefined): string[] | undefined {
  const values = platform?.properties.filter((p) => p.name === CLOSURE_PROPERTY).map((p) => p.value);
  if (values === undefined || values.length === 0) return undefined;
  const roots = values.flatMap((v) => v.split(/\s+/)).filter((s) => s !== "");
  for (const r of roots) {
    if (!r.startsWith(STORE_DIR) || r.length === STORE_DIR.length) {
      throw RpcError.invalidArgument(
        `platform property "${CLOSURE_PROPERTY}" lists "${r}", which is not a path under ${STORE_DIR}`,
      );
    }
  }
  return roots.length > 0 ? roots : undefined;
}

/** `/nix/store/abc-gcc/bin/gcc` → `/nix/store/abc-gcc`: closures are of whole store paths. */
function storePathOf(p: string): string {
  if (!p.startsWith(STORE_DIR)) return p;
  const slash = p.indexOf("/", STORE_DIR.length);
  return slash === -1 ? p : p.slice(0, slash);
}

function describe(source: ClosureRoots["source"]): string {
  switch (source) {
    case "platform":
      return `"${CLOSURE_PROPERTY}" platform property or the command line`;
    case "command":
      return "command line or environment";
    case "server default":
      return "server's default closure (--closure)";
  }
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort();
}
