import { RpcError } from "../errors";
import type { Action, Command, Platform } from "../proto/build/bazel/remote/execution/v2/remote_execution";
import type { Closure } from "../../sandbox/spec";
import { NotAStorePathError, UnknownStorePathError, findStorePathRefs, parseStorePath } from "../../sandbox/mod";

/** The platform property naming an action's Nix closure roots (whitespace-separated store paths). */
export const CLOSURE_PROPERTY = "nix-closure";

const STORE_DIR = "/nix/store/";

/** Anything that can turn closure roots into a closure: sandbox's ClosureResolver, in production. */
export interface ClosureSource {
  resolve(roots: string[]): Closure;
}

/** An action's closure roots, and where each came from (for error messages and cache keys). */
export interface ClosureRoots {
  /** Every root, as whole store paths, sorted and without duplicates. */
  readonly roots: readonly string[];
  /** From the `nix-closure` platform property. */
  readonly declared: readonly string[];
  /** Named in argv or environment values. */
  readonly named: readonly string[];
  /**
   * The server's default roots (`--closure`), when they are among `roots`:
   * only for actions that declare no `nix-closure`. Not part of the action
   * digest, so a result made with them must record which ones they were.
   */
  readonly defaults: readonly string[];
}

/**
 * The store paths an action's sandbox sees the closure of: the `nix-closure`
 * platform property (Action.platform, else Command.platform, which is the only
 * one Buck2 fills) or, when the action declares none, the server's default
 * roots; plus, either way, every store path named in argv or environment
 * values, since a command naming `/nix/store/…-gcc/bin/gcc` plainly needs it.
 * A declaration replaces the default rather than adding to it, so an action
 * that says what it needs gets exactly that, whatever the server was started with.
 */
export function closureRootsFor(action: Action, command: Command, defaults: readonly string[]): ClosureRoots {
  const declaredRoots = platformRoots(action.platform) ?? platformRoots(command.platform);
  const declared = unique((declaredRoots ?? []).map(storePathOf));
  const named = unique([
    ...command.arguments.flatMap((a) => findStorePathRefs(a)),
    ...command.environmentVariables.flatMap((e) => findStorePathRefs(e.value)),
  ]);
  const defaultRoots = declaredRoots === undefined ? defaultClosureRoots(defaults) : [];
  return { roots: unique([...declared, ...named, ...defaultRoots]), declared, named, defaults: defaultRoots };
}

/** The server's default roots on their own, as whole store paths. */
export function defaultClosureRoots(defaults: readonly string[]): string[] {
  return unique(defaults.map(storePathOf));
}

/**
 * Resolves roots to their closure. A root Nix does not know is the client's to
 * fix, so it is FAILED_PRECONDITION naming the path and how to get it built.
 */
export function resolveClosure(source: ClosureSource, roots: ClosureRoots): Closure {
  return resolveRoots(source, roots.roots, roots);
}

/** Resolves just the server's default roots of `roots` (which must have some); errors as resolveClosure. */
export function resolveDefaultClosure(source: ClosureSource, roots: ClosureRoots): Closure {
  return resolveRoots(source, roots.defaults, roots);
}

function resolveRoots(source: ClosureSource, paths: readonly string[], roots: ClosureRoots): Closure {
  try {
    return source.resolve([...paths]);
  } catch (err) {
    if (err instanceof UnknownStorePathError) {
      throw RpcError.failedPrecondition(
        `store path "${err.path}" (from the ${originOf(err.path, roots)}) is not a valid path in this machine's Nix store; ` +
          `build or fetch it first (e.g. \`nix-store --realise ${err.path}\` or \`nix build\` of the derivation that produces it), then retry`,
      );
    }
    // Declared and named roots are checked before this; only a default that
    // bypassed \`lre serve\`'s own check can get here, and it is no client bug.
    if (err instanceof NotAStorePathError) {
      throw RpcError.failedPrecondition(
        `"${err.path}" (from the ${originOf(err.path, roots)}) is not a Nix store path: expected ${STORE_DIR}<32-character hash>-<name>; ` +
          `name the store path itself, e.g. as printed by \`nix-build\` or \`nix path-info\``,
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
    if (parseStorePath(r) === undefined) {
      // FAILED_PRECONDITION rather than INVALID_ARGUMENT: to the user a typo
      // in a store path and a path never built are the same mistake (the
      // toolchain the action declares is not there), so both get the same
      // code and the same kind of message. Neither carries MISSING
      // violations, so Bazel and Buck2 do not retry either.
      throw RpcError.failedPrecondition(
        `platform property "${CLOSURE_PROPERTY}" lists "${r}", which is not a Nix store path: expected ` +
          `${STORE_DIR}<32-character hash>-<name> (optionally followed by /...); list the store paths the action needs, ` +
          `separated by spaces, as printed by \`nix-build\` or \`nix path-info\``,
      );
    }
  }
  return roots.length > 0 ? roots : undefined;
}

/** `/nix/store/abc-gcc/bin/gcc` → `/nix/store/abc-gcc`: closures are of whole store paths. Anything else is kept for resolve to refuse. */
function storePathOf(p: string): string {
  return parseStorePath(p) ?? p;
}

function originOf(path: string, roots: ClosureRoots): string {
  if (roots.declared.includes(path)) return `"${CLOSURE_PROPERTY}" platform property`;
  if (roots.named.includes(path)) return "command line or environment";
  return "server's default closure (lre serve --closure)";
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)].sort();
}
