#!/usr/bin/env bash
# Runs every notebook headless (or those named) with the v3lab Rust kernel, fails on any
# error or failed check, and writes the executed notebooks back with their outputs and
# figures. Sets itself up first (notebooks/setup.sh: cached, quick when done before).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/setup.sh"
exec "$here/.venv/bin/python" "$here/run.py" "$@"
