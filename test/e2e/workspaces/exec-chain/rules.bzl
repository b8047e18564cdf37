"""Starlark rules whose outputs are a directory and an unresolved symlink.

Bazel 4.2.3 has ctx.actions.declare_symlink only behind
--experimental_allow_unresolved_symlinks; the test passes it.
"""

_TREE_SCRIPT = """
set -eu
out="$1"
src="$2"
mkdir -p "$out/nested/deeper"
cp "$src" "$out/nested/copy.txt"
printf 'deep\\n' > "$out/nested/deeper/leaf.txt"
printf '#!/bin/sh\\necho tool\\n' > "$out/tool.sh"
chmod 755 "$out/tool.sh"
"""

def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [out],
        arguments = [out.path, ctx.file.src.path],
        command = _TREE_SCRIPT,
        mnemonic = "ExecTree",
    )
    return [DefaultInfo(files = depset([out]))]

exec_tree = rule(
    implementation = _tree_impl,
    attrs = {"src": attr.label(allow_single_file = True, mandatory = True)},
)

def _link_impl(ctx):
    link = ctx.actions.declare_symlink(ctx.label.name + ".link")
    ctx.actions.run_shell(
        outputs = [link],
        arguments = [link.path],
        command = 'ln -s "payload/does-not-need-to-exist" "$1"',
        mnemonic = "ExecSymlink",
    )
    return [DefaultInfo(files = depset([link]))]

exec_symlink = rule(implementation = _link_impl)
