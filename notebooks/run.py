"""Runs notebooks headless with the v3lab Rust kernel and writes them back with their outputs.

Usage: notebooks/.venv/bin/python notebooks/run.py [NAME.ipynb ...]   (default: every notebook)

A notebook fails when any cell raises (a panic, a failed `check`, a compile error), prints an
error through `?`, or runs past the per-cell timeout ($V3LAB_NOTEBOOK_CELL_TIMEOUT seconds,
default 900: the first cell compiles the crate). A failed notebook is left as it was on disk
and its executed copy goes to notebooks/.failed/ for inspection. Prints each notebook's time
and its first cell's (the compile).
"""
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

HERE = Path(__file__).resolve().parent
TIMEOUT = int(os.environ.get("V3LAB_NOTEBOOK_CELL_TIMEOUT", "900"))


def problems(nb):
    """Error outputs, and anything on stderr."""
    found = []
    for i, cell in enumerate(nb.cells):
        outputs = cell.get("outputs", [])
        for out in outputs:
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("data", {}).get("text/plain", "").startswith("Svg("):
                # evcxr fell back to Debug: the figure would show as its SVG source.
                found.append(f"cell {i}: a figure shown as text; draw it with `figure.show(w, h)?;`")
        # evcxr reports a panic (a failed check) and an error returned by `?` on stderr
        # without failing the cell; nothing else writes there.
        stderr = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr")
        if stderr.strip():
            found.append(f"cell {i} (stderr): {stderr.strip()[:1500]}")
    return found


def run(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="v3lab-rust", resources={"metadata": {"path": str(HERE)}}
    )
    started = time.monotonic()
    cell_seconds = []

    def on_cell_start(cell, cell_index):
        cell_seconds.append((cell_index, time.monotonic()))

    client.on_cell_start = on_cell_start
    error = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        error = str(e)[-4000:]
    total = time.monotonic() - started
    starts = [t for _, t in cell_seconds] + [started + total]
    first_code = next((k for k, (i, _) in enumerate(cell_seconds) if nb.cells[i].cell_type == "code"), 0)
    compile_s = starts[first_code + 1] - starts[first_code] if cell_seconds else 0.0
    found = problems(nb) + ([error] if error else [])
    if found:
        failed = HERE / ".failed"
        failed.mkdir(exist_ok=True)
        nbformat.write(nb, failed / path.name)
        return False, total, compile_s, found
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return True, total, compile_s, []


def main():
    names = sys.argv[1:] or sorted(p.name for p in HERE.glob("[0-9][0-9]-*.ipynb"))
    passed = 0
    print(f"{'notebook':<28} {'result':<7} {'total s':>8} {'first cell s':>13}")
    for name in names:
        ok, total, compile_s, found = run(HERE / name)
        passed += ok
        print(f"{name:<28} {'ok' if ok else 'FAILED':<7} {total:>8.1f} {compile_s:>13.1f}", flush=True)
        for line in found:
            print(f"    {line}", flush=True)
    print(f"notebooks: {passed} passed, {len(names) - passed} failed")
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
