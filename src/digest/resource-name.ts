import { RpcError } from "../errors";
import { type Digest, type DigestFn, makeDigest } from "./digest";
import { type DigestConfig, RESERVED_SEGMENTS, instanceDefaultFn, instanceSegmentProblem } from "./instance-name";

/**
 * ByteStream resource names (REAPI "Blob resource names"):
 *
 *   read:  {instance/}blobs/{df/}{hash}/{size}
 *          {instance/}compressed-blobs/{compressor}/{df/}{hash}/{size}
 *   write: {instance/}uploads/{uuid}/blobs/{df/}{hash}/{size}{/metadata}
 *          {instance/}uploads/{uuid}/compressed-blobs/{compressor}/{df/}{hash}/{size}{/metadata}
 *
 * Instance names may span several segments, so names are parsed by finding the
 * first reserved keyword rather than by position; instance names can never
 * contain a keyword, which makes the first one unambiguous.
 */

export type Compression = "identity" | "zstd";

export interface BlobResource {
  readonly instance: string;
  readonly digest: Digest;
  /** How the bytes travel; the digest always names the uncompressed blob. */
  readonly compression: Compression;
}

export interface UploadResource extends BlobResource {
  readonly uuid: string;
}

const READ_GRAMMAR =
  "{instance/}blobs/{digest_function/}{hash}/{size} or {instance/}compressed-blobs/zstd/{digest_function/}{hash}/{size}";
const WRITE_GRAMMAR =
  "{instance/}uploads/{uuid}/blobs/{digest_function/}{hash}/{size}{/metadata} or {instance/}uploads/{uuid}/compressed-blobs/zstd/{digest_function/}{hash}/{size}{/metadata}";

const MAX_RESOURCE_NAME_BYTES = 4096;
const SIZE = /^(0|[1-9][0-9]{0,15})$/;

/** Digest-function segment names REAPI defines; only sha256 and blake3 are served. */
const KNOWN_FUNCTION_SEGMENTS = new Set(["sha256", "blake3", "sha1", "md5", "vso", "sha384", "sha512", "murmur3", "sha256tree", "gitsha1"]);
/** Compressor segment names REAPI defines; only zstd is served. */
const KNOWN_COMPRESSORS = new Set(["identity", "zstd", "deflate", "brotli"]);

class NameError extends Error {}

export function parseReadResourceName(name: string, digests: DigestConfig): BlobResource {
  return withGrammar(name, READ_GRAMMAR, () => {
    const segments = splitName(name);
    const k = firstKeyword(segments);
    const instance = instanceOf(segments, k);
    const keyword = segments[k];
    if (keyword !== "blobs" && keyword !== "compressed-blobs") {
      throw new NameError(`expected "blobs" or "compressed-blobs" after the instance name, found "${keyword}"`);
    }
    const blob = parseBlobPart(segments, k, instance, digests);
    if (blob.next !== segments.length) {
      throw new NameError(`unexpected segments after the size: "${segments.slice(blob.next).join("/").slice(0, 80)}"`);
    }
    return { instance, digest: blob.digest, compression: blob.compression };
  });
}

export function parseWriteResourceName(name: string, digests: DigestConfig): UploadResource {
  return withGrammar(name, WRITE_GRAMMAR, () => {
    const segments = splitName(name);
    const k = firstKeyword(segments);
    const instance = instanceOf(segments, k);
    if (segments[k] !== "uploads") {
      throw new NameError(`expected "uploads" after the instance name, found "${segments[k]}"`);
    }
    const uuid = segments[k + 1];
    if (uuid === undefined || uuid === "" || RESERVED_SEGMENTS.has(uuid)) {
      throw new NameError("expected an upload id after \"uploads\"");
    }
    const keyword = segments[k + 2];
    if (keyword !== "blobs" && keyword !== "compressed-blobs") {
      throw new NameError(`expected "blobs" or "compressed-blobs" after the upload id, found "${keyword ?? ""}"`);
    }
    // Anything after the size is client metadata REAPI lets servers ignore.
    const blob = parseBlobPart(segments, k + 2, instance, digests);
    return { instance, uuid, digest: blob.digest, compression: blob.compression };
  });
}

function withGrammar<T>(name: string, grammar: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof NameError) {
      throw RpcError.invalidArgument(`resource name "${name.slice(0, 200)}" is not valid: ${err.message}; expected ${grammar}`);
    }
    throw err;
  }
}

function splitName(name: string): string[] {
  if (name === "") throw new NameError("it is empty");
  if (name.length > MAX_RESOURCE_NAME_BYTES) throw new NameError(`it is longer than ${MAX_RESOURCE_NAME_BYTES} bytes`);
  return name.split("/");
}

function firstKeyword(segments: readonly string[]): number {
  const k = segments.findIndex((s) => RESERVED_SEGMENTS.has(s));
  if (k < 0) throw new NameError("it has no \"blobs\", \"compressed-blobs\" or \"uploads\" segment");
  return k;
}

function instanceOf(segments: readonly string[], keywordIndex: number): string {
  const parts = segments.slice(0, keywordIndex);
  for (const part of parts) {
    const problem = instanceSegmentProblem(part);
    if (problem !== undefined) throw new NameError(`its instance name ${problem}`);
  }
  return parts.join("/");
}

/** Parses `blobs/{df/}{hash}/{size}` or `compressed-blobs/{c}/{df/}{hash}/{size}` starting at index `k`. */
function parseBlobPart(
  segments: readonly string[],
  k: number,
  instance: string,
  digests: DigestConfig,
): { digest: Digest; compression: Compression; next: number } {
  let i = k + 1;
  let compression: Compression = "identity";
  if (segments[k] === "compressed-blobs") {
    const c = segments[i] ?? "";
    if (c !== "zstd") {
      throw new NameError(
        KNOWN_COMPRESSORS.has(c)
          ? `compressor "${c}" is not supported here; lre serves compressed-blobs/zstd only`
          : `"${c.slice(0, 40)}" is not a compressor name`,
      );
    }
    compression = "zstd";
    i++;
  }
  let fn: DigestFn = instanceDefaultFn(digests, instance);
  const maybeFn = segments[i] ?? "";
  if (KNOWN_FUNCTION_SEGMENTS.has(maybeFn)) {
    if (maybeFn !== "sha256" && maybeFn !== "blake3") {
      throw new NameError(`digest function "${maybeFn}" is not supported; lre supports sha256 and blake3`);
    }
    fn = maybeFn;
    i++;
  }
  const hash = segments[i];
  const size = segments[i + 1];
  if (hash === undefined || size === undefined) throw new NameError("it ends before the hash and size");
  if (!SIZE.test(size)) throw new NameError(`size "${size.slice(0, 40)}" is not a non-negative decimal integer`);
  let digest: Digest;
  try {
    digest = makeDigest(fn, hash, Number(size), "resource name digest");
  } catch (err) {
    throw new NameError(err instanceof Error ? err.message : String(err));
  }
  return { digest, compression, next: i + 2 };
}

/** The read name for a digest, as a client would build it; used by tests and by our own log lines. */
export function formatReadResourceName(instance: string, digest: Digest, compression: Compression = "identity"): string {
  const prefix = instance === "" ? "" : `${instance}/`;
  const kind = compression === "zstd" ? "compressed-blobs/zstd" : "blobs";
  const df = digest.fn === "sha256" ? "" : `${digest.fn}/`;
  return `${prefix}${kind}/${df}${digest.hash}/${digest.sizeBytes}`;
}

export function formatWriteResourceName(
  instance: string,
  uuid: string,
  digest: Digest,
  compression: Compression = "identity",
): string {
  const prefix = instance === "" ? "" : `${instance}/`;
  const kind = compression === "zstd" ? "compressed-blobs/zstd" : "blobs";
  const df = digest.fn === "sha256" ? "" : `${digest.fn}/`;
  return `${prefix}uploads/${uuid}/${kind}/${df}${digest.hash}/${digest.sizeBytes}`;
}
