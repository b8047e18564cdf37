import type { DigestFn } from "../digest/digest";
import { fromWire } from "../digest/digest";
import { RpcError } from "../errors";
import type { ActionResult, Digest as WireDigest } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/**
 * Rejects an ActionResult a client wants to store (UpdateActionResult) if it
 * could poison later builds: output paths that are absolute, climb out with
 * `..`, have empty or `.` segments, repeat, or digests that are missing or
 * malformed (reliability-targets I-5, S-7). Throws INVALID_ARGUMENT naming the
 * offending field.
 */
export function validateActionResult(result: ActionResult, fn: DigestFn): void {
  const paths = new Set<string>();
  const claim = (path: string, what: string): void => {
    checkOutputPath(path, what);
    if (paths.has(path)) throw RpcError.invalidArgument(`${what} repeats output path "${path}"; each output path may appear once`);
    paths.add(path);
  };

  result.outputFiles.forEach((f, i) => {
    claim(f.path, `output_files[${i}]`);
    fromWire(fn, f.digest, `output_files[${i}] ("${f.path}") digest`);
  });
  result.outputDirectories.forEach((d, i) => {
    claim(d.path, `output_directories[${i}]`);
    fromWire(fn, d.treeDigest, `output_directories[${i}] ("${d.path}") tree_digest`);
    if (d.rootDirectoryDigest !== undefined) {
      fromWire(fn, d.rootDirectoryDigest, `output_directories[${i}] ("${d.path}") root_directory_digest`);
    }
  });
  // The legacy symlink lists and output_symlinks may describe the same link, so
  // they are checked for duplicates within each list only.
  for (const [list, name] of [
    [result.outputSymlinks, "output_symlinks"],
    [result.outputFileSymlinks, "output_file_symlinks"],
    [result.outputDirectorySymlinks, "output_directory_symlinks"],
  ] as const) {
    const seen = new Set<string>();
    list.forEach((s, i) => {
      const what = `${name}[${i}]`;
      checkOutputPath(s.path, what);
      if (seen.has(s.path) || (name === "output_symlinks" && paths.has(s.path))) {
        throw RpcError.invalidArgument(`${what} repeats output path "${s.path}"; each output path may appear once`);
      }
      seen.add(s.path);
      if (s.target === "" || s.target.includes("\0")) {
        throw RpcError.invalidArgument(`${what} ("${s.path}") has an empty or NUL-containing target`);
      }
    });
  }
  optionalDigest(fn, result.stdoutDigest, "stdout_digest");
  optionalDigest(fn, result.stderrDigest, "stderr_digest");
}

function optionalDigest(fn: DigestFn, d: WireDigest | undefined, what: string): void {
  if (d !== undefined) fromWire(fn, d, what);
}

/** An output path is relative to the working directory and names something inside it. */
export function checkOutputPath(path: string, what: string): void {
  const bad = (why: string): never => {
    throw RpcError.invalidArgument(`${what} has path "${path.slice(0, 200)}", which ${why}; output paths are relative, "/"-separated, without "." or ".."`);
  };
  if (path === "") bad("is empty");
  if (path.includes("\0")) bad("contains a NUL byte");
  if (path.startsWith("/")) bad("is absolute");
  for (const segment of path.split("/")) {
    if (segment === "") bad("has an empty segment");
    if (segment === "." || segment === "..") bad(`has a "${segment}" segment`);
  }
}
