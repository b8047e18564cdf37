import pkg from "../../package.json" with { type: "json" };

/** Bundled into the binary at build time, so `lre --version` needs no files beside it. */
export const VERSION: string = pkg.version;

export function versionLine(): string {
  return `lre ${VERSION} (bun ${Bun.version}, ${process.platform}-${process.arch})`;
}
