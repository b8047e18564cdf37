/**
 * remotetool, the REAPI debugging client from bazelbuild/remote-apis-sdks (Go):
 * a second real client next to Bazel, with its own gRPC stack (grpc-go).
 *
 * How it gets built:
 *  - `go install .../remotetool@latest` does not work here: the Go module
 *    proxy answers 403 ("This module version is not available") for the
 *    module's version list (`@v/list`, `@latest`), while individual versions
 *    are served. `go install pkg@version` also asks for that list (to check
 *    for deprecation), so it fails the same way.
 *  - So a pinned pseudo-version is required from a throwaway module and built
 *    with `go build` (-mod=mod fills in go.sum from the proxy). The binary is
 *    cached under ~/.cache/lre-test/bin with the version in its name.
 *
 * Flags that matter against lre: `--service unix:///abs/path` (grpc-go dials
 * Unix sockets itself), `--service_no_security` (no TLS, no credentials),
 * `--instance NAME`, `--logtostderr` (otherwise glog writes files into /tmp).
 * Quirk: when upload_blob fails, remotetool formats its error message with
 * the --digest flag and, if that flag is empty, dies with "--digest must be
 * specified" instead of the real error; `remotetool()` below therefore fills
 * in --digest for upload_blob from the file's SHA-256.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TEST_CACHE_DIR, aptGetInstall, runChecked, runCommand, type CommandResult } from "./bazel";

const MODULE = "github.com/bazelbuild/remote-apis-sdks";
/** 2025-09-24; builds with Go 1.23 and later. */
const VERSION = "v0.0.0-20250924144931-212b8b213918";

/** A Go toolchain: PATH first, then the usual tarball location, else Debian's golang-go. */
async function ensureGo(): Promise<string> {
  const candidates = [Bun.which("go"), "/usr/local/go/bin/go"];
  for (const c of candidates) if (c !== null && existsSync(c)) return c;
  await aptGetInstall(["golang-go"]);
  const installed = Bun.which("go") ?? "/usr/lib/go/bin/go";
  if (!existsSync(installed)) throw new Error('installed Debian package "golang-go" but found no "go" binary');
  return installed;
}

/** Path of a built remotetool binary; builds it on first use (about a minute with a cold module cache). */
export async function ensureRemotetool(): Promise<string> {
  const binDir = join(TEST_CACHE_DIR, "bin");
  const binary = join(binDir, `remotetool-${VERSION}`);
  if (existsSync(binary)) return binary;

  const go = await ensureGo();
  mkdirSync(binDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), "lre-remotetool-build-"));
  try {
    writeFileSync(join(work, "go.mod"), `module lre.test/remotetool\n\ngo 1.23\n\nrequire ${MODULE} ${VERSION}\n`);
    const staged = join(work, "remotetool");
    await runChecked([go, "build", "-o", staged, `${MODULE}/go/cmd/remotetool`], {
      cwd: work,
      // GOTOOLCHAIN=auto lets an older Go (e.g. Debian's) fetch the toolchain the module asks for.
      env: { GOFLAGS: "-mod=mod", GOTOOLCHAIN: "auto", CGO_ENABLED: "0" },
    });
    renameSync(staged, binary);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return binary;
}

/** `hash/size` of a file, the digest syntax remotetool takes. */
export function fileDigest(path: string): string {
  const bytes = readFileSync(path);
  return `${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}/${bytes.length}`;
}

export interface RemotetoolTarget {
  /** gRPC target, e.g. `unix:///tmp/x/lre.sock` or `127.0.0.1:8980`. */
  readonly service: string;
  /** REAPI instance name; empty for the default instance. */
  readonly instance?: string;
}

/**
 * Runs one remotetool operation against lre, e.g.
 * `remotetool(bin, target, "download_blob", { digest: "abc.../12", path: "/tmp/out" })`.
 * Never throws for a non-zero exit; the caller checks `exitCode` and shows `stderr`.
 */
export function remotetool(
  binary: string,
  target: RemotetoolTarget,
  operation: string,
  args: Readonly<Record<string, string>> = {},
): Promise<CommandResult> {
  const extra: Record<string, string> = { ...args };
  if (operation === "upload_blob" && extra["digest"] === undefined && extra["path"] !== undefined) {
    extra["digest"] = fileDigest(extra["path"]);
  }
  const argv = [
    binary,
    `--service=${target.service}`,
    "--service_no_security",
    `--instance=${target.instance ?? ""}`,
    "--logtostderr",
    `--operation=${operation}`,
    ...Object.entries(extra).map(([k, v]) => `--${k}=${v}`),
  ];
  return runCommand(argv, { timeoutMs: 120_000 });
}
