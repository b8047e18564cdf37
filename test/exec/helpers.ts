import type { BlobStore } from "../../src/cas/blob-store";
import type { Digest, DigestFn } from "../../src/digest/digest";
import { toWire } from "../../src/digest/digest";
import { digestOf } from "../../src/digest/hasher";
import {
  Action,
  Command,
  Directory,
  type Digest as WireDigest,
} from "../../src/proto/build/bazel/remote/execution/v2/remote_execution";

/** Small builders so each test states the tree it sends, not protobuf plumbing. */

export async function putBytes(cas: BlobStore, data: Uint8Array | string, fn: DigestFn = "sha256"): Promise<Digest> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const d = digestOf(fn, bytes);
  await cas.put(d, bytes);
  return d;
}

/** The digest a blob would have, without storing it (for "missing" cases). */
export function digestOfText(data: string, fn: DigestFn = "sha256"): Digest {
  return digestOf(fn, new TextEncoder().encode(data));
}

export interface DirSpec {
  files?: { name: string; digest: Digest | WireDigest; executable?: boolean }[];
  dirs?: { name: string; digest: Digest | WireDigest }[];
  symlinks?: { name: string; target: string }[];
}

export function directory(spec: DirSpec): Directory {
  return Directory.fromPartial({
    files: (spec.files ?? []).map((f) => ({ name: f.name, digest: wire(f.digest), isExecutable: f.executable ?? false })),
    directories: (spec.dirs ?? []).map((d) => ({ name: d.name, digest: wire(d.digest) })),
    symlinks: (spec.symlinks ?? []).map((s) => ({ name: s.name, target: s.target })),
  });
}

export function encodeDirectory(spec: DirSpec): Uint8Array {
  return Directory.encode(directory(spec)).finish();
}

export async function putDirectory(cas: BlobStore, spec: DirSpec, fn: DigestFn = "sha256"): Promise<Digest> {
  return putBytes(cas, encodeDirectory(spec), fn);
}

export interface CommandSpec {
  argv: string[];
  env?: Record<string, string>;
  outputPaths?: string[];
  outputFiles?: string[];
  outputDirectories?: string[];
  workingDirectory?: string;
  platform?: Record<string, string>;
}

export function command(spec: CommandSpec): Command {
  return Command.fromPartial({
    arguments: spec.argv,
    environmentVariables: Object.entries(spec.env ?? {})
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, value]) => ({ name, value })),
    outputPaths: spec.outputPaths ?? [],
    outputFiles: spec.outputFiles ?? [],
    outputDirectories: spec.outputDirectories ?? [],
    workingDirectory: spec.workingDirectory ?? "",
    platform: spec.platform === undefined ? undefined : { properties: platformProps(spec.platform) },
  });
}

export interface ActionSpec {
  command: Digest;
  inputRoot: Digest;
  timeoutSeconds?: number;
  doNotCache?: boolean;
  platform?: Record<string, string>;
  salt?: string;
}

export function action(spec: ActionSpec): Action {
  return Action.fromPartial({
    commandDigest: toWire(spec.command),
    inputRootDigest: toWire(spec.inputRoot),
    timeout: spec.timeoutSeconds === undefined ? undefined : { seconds: spec.timeoutSeconds, nanos: 0 },
    doNotCache: spec.doNotCache ?? false,
    salt: Buffer.from(spec.salt ?? ""),
    platform: spec.platform === undefined ? undefined : { properties: platformProps(spec.platform) },
  });
}

/** Stores Command and Action for a ready input root; returns the action digest. */
export async function putAction(
  cas: BlobStore,
  cmd: CommandSpec,
  inputRoot: Digest,
  extra: Omit<ActionSpec, "command" | "inputRoot"> = {},
): Promise<Digest> {
  const c = await putBytes(cas, Command.encode(command(cmd)).finish());
  return putBytes(cas, Action.encode(action({ ...extra, command: c, inputRoot })).finish());
}

function platformProps(p: Record<string, string>): { name: string; value: string }[] {
  return Object.entries(p)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, value]) => ({ name, value }));
}

function wire(d: Digest | WireDigest): WireDigest {
  return { hash: d.hash, sizeBytes: d.sizeBytes };
}
