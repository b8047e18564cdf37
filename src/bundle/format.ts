import { pack, unpack } from "msgpackr";
import type { ResultOrigin } from "../ac/action-cache";
import { validateActionResult } from "../ac/validate-action-result";
import type { Digest, DigestFn } from "../digest/digest";
import { DIGEST_FUNCTIONS, makeDigest } from "../digest/digest";
import { parseInstanceName } from "../digest/instance-name";
import { RpcError } from "../errors";
import { ActionResult } from "../proto/build/bazel/remote/execution/v2/remote_execution";

/**
 * The lre bundle file format, version 1.
 *
 *   "LREBNDL1"                                   8-byte start magic
 *   frame*                                       see below
 *   sha256 of every byte before it               32 bytes
 *   "LREBEND1"                                   8-byte end magic
 *
 * A frame is a 4-byte big-endian header length, a msgpack header, and for
 * blob frames the blob's bytes right after the header. Frames come in a fixed
 * order: one `bundle` frame, any number of `blob` frames, any number of
 * `action-result` frames, one `end` frame with the totals. The footer sits at
 * a known place (the last 40 bytes), so a reader knows where the frames must
 * stop, and a missing end magic tells truncation apart from damage.
 *
 * Blob bodies are raw and never held whole: writers and readers stream them.
 * Every blob is checked against its own digest and every byte (headers
 * included) against the footer checksum. The checksum only detects damage:
 * anyone can recompute it, so what a frame says is checked like a client's
 * request (checkActionResultFrame) and its `origin` is only a claim.
 */

export const FORMAT_VERSION = 1;
export const START_MAGIC = new TextEncoder().encode("LREBNDL1");
export const END_MAGIC = new TextEncoder().encode("LREBEND1");
export const CHECKSUM_BYTES = 32;
export const FOOTER_BYTES = CHECKSUM_BYTES + END_MAGIC.byteLength;
/** Headers are small; an ActionResult listing many files stays far below this. A larger length means damage. */
export const MAX_HEADER_BYTES = 64 * 1024 * 1024;

export interface BundleHeader {
  readonly kind: "bundle";
  readonly version: number;
  readonly createdAtMs: number;
  /** The lre that wrote it (`lre --version`). */
  readonly writer: string;
  /** What was selected, e.g. "everything", "used within 2h", "action <digest>". */
  readonly selection: string;
}

export interface BlobFrame {
  readonly kind: "blob";
  readonly digest: Digest;
}

export interface ActionResultFrame {
  readonly kind: "action-result";
  readonly instance: string;
  readonly action: Digest;
  /** Who produced it according to the writer; unverifiable, so an import keeps it only when told to trust it. */
  readonly origin: ResultOrigin;
  readonly result: ActionResult;
}

export interface EndFrame {
  readonly kind: "end";
  readonly blobs: number;
  readonly blobBytes: number;
  readonly actionResults: number;
}

export type Frame = BundleHeader | BlobFrame | ActionResultFrame | EndFrame;

/** Encodes a frame's length prefix and header (not a blob body). */
export function encodeFrame(frame: Frame): Uint8Array {
  const header = pack(toWire(frame));
  const out = new Uint8Array(4 + header.byteLength);
  new DataView(out.buffer).setUint32(0, header.byteLength);
  out.set(header, 4);
  return out;
}

function toWire(frame: Frame): Record<string, unknown> {
  switch (frame.kind) {
    case "bundle":
      return { ...frame };
    case "blob":
      return { kind: "blob", fn: frame.digest.fn, hash: frame.digest.hash, size: frame.digest.sizeBytes };
    case "action-result":
      return {
        kind: "action-result",
        instance: frame.instance,
        fn: frame.action.fn,
        hash: frame.action.hash,
        size: frame.action.sizeBytes,
        origin: frame.origin,
        result: ActionResult.encode(frame.result).finish(),
      };
    case "end":
      return { ...frame };
  }
}

/** Decodes and checks one header; anything unexpected is INVALID_ARGUMENT naming what was wrong. */
export function decodeFrame(bytes: Uint8Array): Frame {
  let raw: unknown;
  try {
    raw = unpack(bytes);
  } catch (err) {
    throw RpcError.invalidArgument(`a frame header is not valid msgpack (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof raw !== "object" || raw === null) throw RpcError.invalidArgument("a frame header is not a map");
  const h = raw as Record<string, unknown>;
  switch (h.kind) {
    case "bundle":
      return {
        kind: "bundle",
        version: int(h.version, "version"),
        createdAtMs: int(h.createdAtMs, "createdAtMs"),
        writer: str(h.writer, "writer"),
        selection: str(h.selection, "selection"),
      };
    case "blob":
      return { kind: "blob", digest: digestOf(h, "blob") };
    case "action-result": {
      const instance = str(h.instance, "instance");
      if (h.origin !== "sandbox" && h.origin !== "client") {
        throw RpcError.invalidArgument(`an action result has origin ${JSON.stringify(h.origin)}, not "sandbox" or "client"`);
      }
      if (!(h.result instanceof Uint8Array)) throw RpcError.invalidArgument("an action result frame has no encoded result");
      let result: ActionResult;
      try {
        result = ActionResult.decode(h.result);
      } catch (err) {
        throw RpcError.invalidArgument(`an action result does not decode (${err instanceof Error ? err.message : String(err)})`);
      }
      return { kind: "action-result", instance, action: digestOf(h, "action"), origin: h.origin, result };
    }
    case "end":
      return {
        kind: "end",
        blobs: int(h.blobs, "blobs"),
        blobBytes: int(h.blobBytes, "blobBytes"),
        actionResults: int(h.actionResults, "actionResults"),
      };
    default:
      throw RpcError.invalidArgument(`a frame has unknown kind ${JSON.stringify(h.kind)}`);
  }
}

/**
 * Refuses an action-result frame lre would refuse from a client: an instance
 * name UpdateActionResult would reject, or a result with output paths that
 * are absolute, climb out with "..", repeat, or have malformed digests. A
 * bundle is as untrusted as a client, since its checksum proves nothing about
 * who wrote it. Throws INVALID_ARGUMENT saying what is wrong.
 */
export function checkActionResultFrame(f: ActionResultFrame): void {
  parseInstanceName(f.instance);
  validateActionResult(f.result, f.action.fn);
}

function digestOf(h: Record<string, unknown>, what: string): Digest {
  const fn = str(h.fn, `${what} digest function`);
  if (!(DIGEST_FUNCTIONS as readonly string[]).includes(fn)) {
    throw RpcError.invalidArgument(`${what} digest function "${fn}" is not one of ${DIGEST_FUNCTIONS.join(", ")}`);
  }
  return makeDigest(fn as DigestFn, str(h.hash, `${what} hash`), int(h.size, `${what} size`), `${what} digest`);
}

function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw RpcError.invalidArgument(`header field ${what} is ${JSON.stringify(v)}, not a non-negative integer`);
  }
  return v;
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw RpcError.invalidArgument(`header field ${what} is not a string`);
  return v;
}
