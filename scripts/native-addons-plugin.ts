import type { BunPlugin } from "bun";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * `bun build --compile` embeds a `.node` file only when it sees a literal
 * `require("…/x.node")`. lmdb and msgpackr-extract find their addon at run time
 * through node-gyp-build-optional-packages (a directory scan), and
 * @napi-rs/blake-hash tries a long chain of guarded requires; the bundler
 * follows neither, so the compiled binary would look for node_modules beside
 * itself and fail. This plugin swaps those loaders for literal requires of the
 * exact file each package would pick on this machine, so the addon is embedded.
 *
 * The file is chosen by asking the real loader at build time, under the same
 * pinned Bun the binary embeds, so the choice matches what a dev run loads.
 */

const here = createRequire(import.meta.url);

interface LoaderApi {
  path(dir: string): string;
}

/** Addon file the dynamic loader would pick for the package in `pkgDir`. */
export function addonFor(pkgDir: string): string {
  const loader = here("node-gyp-build-optional-packages") as LoaderApi;
  return loader.path(pkgDir);
}

/** Package root (the directory with package.json) that contains `file`. */
function packageDirOf(file: string, name: string): string {
  const marker = `${"/node_modules/"}${name}/`;
  const at = file.lastIndexOf(marker);
  if (at < 0) throw new Error(`cannot find package "${name}" in path "${file}"`);
  return file.slice(0, at + marker.length - 1);
}

// Packages whose addon comes from node-gyp-build-optional-packages. msgpackr's
// extractor is optional (msgpackr falls back to JS), but embedding it keeps the
// binary behaving exactly like a dev run.
const GYP_LOADED = ["lmdb", "msgpackr-extract"] as const;

export function nativeAddonsPlugin(): BunPlugin {
  return {
    name: "lre-native-addons",
    setup(build) {
      build.onResolve({ filter: /^node-gyp-build-optional-packages$/ }, (args) => {
        const owner = GYP_LOADED.find((name) => args.importer.includes(`/node_modules/${name}/`));
        if (owner === undefined) {
          throw new Error(
            `"${args.importer}" loads a native addon dynamically; add its package to GYP_LOADED in scripts/native-addons-plugin.ts`,
          );
        }
        return { path: packageDirOf(args.importer, owner), namespace: "lre-gyp-addon" };
      });
      build.onLoad({ filter: /.*/, namespace: "lre-gyp-addon" }, (args) => {
        const file = addonFor(args.path);
        // Same shape as the real loader: a function taking the package dir.
        return { contents: `module.exports = function loadAddon() { return require(${JSON.stringify(file)}); };`, loader: "js" };
      });

      const blakeEntry = here.resolve("@napi-rs/blake-hash");
      build.onLoad({ filter: /\/node_modules\/@napi-rs\/blake-hash\/index\.js$/ }, (args) => {
        if (args.path !== blakeEntry) return undefined;
        const file = join(dirname(here.resolve("@napi-rs/blake-hash-linux-x64-gnu/package.json")), "blake.linux-x64-gnu.node");
        // Named exports spelled out: the bundler cannot see through a
        // re-exported `.node` module, so `import { blake3 }` would not link.
        const names = Object.keys(here("@napi-rs/blake-hash") as object).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n));
        const lines = [`const native = require(${JSON.stringify(file)});`, "export default native;"];
        for (const n of names) lines.push(`export const ${n} = native.${n};`);
        return { contents: lines.join("\n"), loader: "js" };
      });
    },
  };
}
