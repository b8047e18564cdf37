import { RpcError } from "../errors";

/**
 * Path rules shared by input trees and outputs. Names are compared as UTF-8
 * bytes because REAPI orders Directory children that way; JavaScript's own
 * string order (UTF-16 code units) disagrees for characters above U+FFFF.
 */
export function compareNames(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Why `name` is not a single path segment, or undefined when it is one. */
export function badNameReason(name: string): string | undefined {
  if (name === "") return "is empty";
  if (name === "." || name === "..") return `is "${name}"`;
  if (name.includes("/")) return "contains '/'";
  if (name.includes("\0")) return "contains a NUL character";
  return undefined;
}

/**
 * Checks a relative path such as an output path or working directory and
 * returns its segments. Absolute paths, empty or `.`/`..` segments (which
 * covers `a//b` and trailing slashes) are INVALID_ARGUMENT: lre never lets a
 * client name something outside the action's root.
 */
export function relativeSegments(path: string, what: string, allowEmpty = false): string[] {
  if (path === "") {
    if (allowEmpty) return [];
    throw RpcError.invalidArgument(`${what} is empty; give a path relative to the working directory`);
  }
  if (path.startsWith("/")) {
    throw RpcError.invalidArgument(`${what} "${path}" is absolute; REAPI paths are relative`);
  }
  const segments = path.split("/");
  for (const s of segments) {
    const reason = badNameReason(s);
    if (reason !== undefined) {
      throw RpcError.invalidArgument(
        `${what} "${path}" has a segment that ${reason}; use a normalized relative path without "..", "." or "//"`,
      );
    }
  }
  return segments;
}

/**
 * Whether a symlink at `linkPath` (root-relative segments, the link's own name
 * last) with `target` stays inside the root when resolved lexically.
 * Lexical resolution is a first line of defence only: the sandbox, which
 * shows nothing of the host beyond the input root and the closure, is what
 * makes an escaping link harmless; staging and output collection never follow links.
 */
export function symlinkStaysInside(linkPath: readonly string[], target: string): boolean {
  if (target.startsWith("/")) return false;
  let depth = linkPath.length - 1;
  for (const s of target.split("/")) {
    if (s === "" || s === ".") continue;
    if (s === "..") {
      depth -= 1;
      if (depth < 0) return false;
    } else {
      depth += 1;
    }
  }
  return true;
}
