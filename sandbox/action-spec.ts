/**
 * The usual shape of an action's sandbox, so callers do not each re-invent
 * the mount list: the closure view as the whole of /nix/store, the input root
 * read-write, fresh /proc and /dev, and a private size-capped /tmp. Nothing
 * of the host's /usr, /bin or /etc is mounted.
 */
import type { Mount, SandboxSpec } from "./spec";

export interface ActionSandboxOptions {
  /** Directory from ensureClosureView, bound read-only at /nix/store. */
  readonly closureView: string;
  /** Host directory holding the staged inputs; outputs are written here. */
  readonly inputRoot: string;
  /** Where the input root appears inside. @default inputRoot (same path inside and out) */
  readonly inputRootTarget?: string;
  /** Working directory relative to the input root. @default "" (the root itself) */
  readonly workingDirectory?: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** @default 512 MiB */
  readonly tmpSizeBytes?: number;
  /** @default "none" */
  readonly network?: "none" | "host";
  /** @default "localhost" */
  readonly hostname?: string;
}

const DEFAULT_TMP_BYTES = 512 * 1024 * 1024;

export function actionSandboxSpec(o: ActionSandboxOptions): SandboxSpec {
  const target = (o.inputRootTarget ?? o.inputRoot).replace(/\/+$/, "") || "/";
  const wd = (o.workingDirectory ?? "").replace(/^\/+|\/+$/g, "");
  if (wd.split("/").includes("..")) throw new TypeError(`Cannot use working directory "${o.workingDirectory}": it must stay inside the input root`);
  const mounts: Mount[] = [
    { kind: "ro-bind", source: o.closureView, target: "/nix/store" },
    { kind: "bind", source: o.inputRoot, target },
    { kind: "proc", target: "/proc" },
    { kind: "dev", target: "/dev" },
    { kind: "tmpfs", target: "/tmp", sizeBytes: o.tmpSizeBytes ?? DEFAULT_TMP_BYTES },
  ];
  return {
    mounts,
    env: o.env,
    cwd: wd === "" ? target : `${target === "/" ? "" : target}/${wd}`,
    argv: o.argv,
    network: o.network ?? "none",
    hostname: o.hostname ?? "localhost",
  };
}
