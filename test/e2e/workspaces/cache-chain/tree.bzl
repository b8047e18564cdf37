"""A rule whose single output is a directory of nested files."""

# Lays out: a/copy.txt (the input), a/b/c/deep.txt, d/run.sh (executable)
# and empty.txt (zero bytes). No empty directory: Bazel 4.2.3 leaves those out
# of what it uploads (it drops them even with --disk_cache), so a cache hit
# could never restore one.
_SCRIPT = """
set -eu
out="$1"
src="$2"
mkdir -p "$out/a/b/c" "$out/d"
cp "$src" "$out/a/copy.txt"
printf 'deep\\n' > "$out/a/b/c/deep.txt"
printf '#!/bin/sh\\necho run\\n' > "$out/d/run.sh"
chmod 755 "$out/d/run.sh"
: > "$out/empty.txt"
"""

def _file_tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [out],
        arguments = [out.path, ctx.file.src.path],
        command = _SCRIPT,
        mnemonic = "FileTree",
    )
    return [DefaultInfo(files = depset([out]))]

file_tree = rule(
    implementation = _file_tree_impl,
    attrs = {"src": attr.label(allow_single_file = True, mandatory = True)},
)
