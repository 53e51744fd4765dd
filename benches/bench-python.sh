# Sourced by the comparison scripts (from the repository root): sets `python` to an
# interpreter with PyTorch and transformers, $V3LAB_BENCH_PYTHON if given, else a virtual
# environment made once in target/bench-venv (git ignores target/; about 6 GB with torch's
# CUDA wheels).
python=${V3LAB_BENCH_PYTHON:-}
if [[ -z "$python" ]]; then
    if [[ ! -x target/bench-venv/bin/python ]]; then
        python3 -m venv target/bench-venv
        target/bench-venv/bin/pip install -q torch transformers safetensors
    fi
    python=target/bench-venv/bin/python
fi
