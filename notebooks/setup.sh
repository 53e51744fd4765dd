#!/usr/bin/env bash
# One-command setup of the notebooks on a fresh machine (a Rust toolchain and python3 with
# venv are all it needs):
#   - the evcxr Jupyter kernel, a pinned version built from crates.io with --locked, kept in
#     a machine-wide cache (${XDG_CACHE_HOME:-~/.cache}/v3lab-notebooks) so that every clone
#     and every CI run on this machine reuses it;
#   - JupyterLab and nbclient (notebooks/requirements.txt, pinned) in notebooks/.venv,
#     which git ignores;
#   - the kernel registered inside that venv only ("Rust (v3lab)"), nowhere else.
# Afterwards: notebooks/.venv/bin/jupyter lab notebooks/
# Running it again does only what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
EVCXR_VERSION=0.22.0
cache="${V3LAB_NOTEBOOK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/v3lab-notebooks}"
evcxr_root="$cache/evcxr_jupyter-$EVCXR_VERSION"
evcxr="$evcxr_root/bin/evcxr_jupyter"
venv="$here/.venv"
started=$SECONDS

if [ ! -x "$evcxr" ]; then
    echo "setup: building evcxr_jupyter $EVCXR_VERSION from crates.io (once per machine; about 10 minutes on 2 cores)"
    mkdir -p "$cache"
    # A build of its own target folder, so an interrupted install resumes where it stopped;
    # the binary lands in a temporary root and is renamed into place only when complete.
    CARGO_TARGET_DIR="$cache/evcxr-build" cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked \
        --root "$evcxr_root.tmp" --quiet
    rm -rf "$evcxr_root"
    mv "$evcxr_root.tmp" "$evcxr_root"
    rm -rf "$cache/evcxr-build"
fi

stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Jupyter into notebooks/.venv (pip's own cache makes a second time quick)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" >"$stamp"
fi

# The kernel spec lives in the venv's share/jupyter, which only this venv's Jupyter reads.
kernel_dir="$venv/share/jupyter/kernels/v3lab-rust"
mkdir -p "$kernel_dir"
cat >"$kernel_dir/kernel.json.tmp" <<JSON
{
  "argv": ["$evcxr", "--control_file", "{connection_file}"],
  "display_name": "Rust (v3lab)",
  "language": "rust",
  "interrupt_mode": "message"
}
JSON
mv "$kernel_dir/kernel.json.tmp" "$kernel_dir/kernel.json"
echo "setup: ready in $((SECONDS - started)) s; open the notebooks with: notebooks/.venv/bin/jupyter lab notebooks/"
