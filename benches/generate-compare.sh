#!/usr/bin/env bash
# Decode speed at batch 1 on the CPU, side by side in one run: v3lab plain, v3lab with MTP
# speculative decoding, and transformers' greedy `generate`, on the same checkpoint (a folder
# written by `v3lab train` or `ablate-mtp`: weights with the MTP module, tokenizer.json).
#
#   benches/generate-compare.sh CHECKPOINT [NEW_TOKENS] [REPEATS]
#
# Threads: 2 (RAYON_NUM_THREADS for v3lab, torch.set_num_threads for transformers). PyTorch
# and transformers come from $V3LAB_BENCH_PYTHON, or a virtual environment this script makes
# once in target/bench-venv (git ignores target/; about 6 GB with torch's CUDA wheels).
# Greedy everywhere, with the EOS ignored by generating exactly NEW_TOKENS tokens; the
# summary checks that all three produced the same ids.
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: benches/generate-compare.sh CHECKPOINT [NEW_TOKENS] [REPEATS]}
new=${2:-128}
repeats=${3:-3}
threads=2
source benches/bench-python.sh
cargo build --release -q --bin v3lab
prompts=("The quick brown fox jumps over" "fn main() {" "## Installation")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The checkpoint without an EOS, so every run generates exactly $new tokens.
cp -r "$ckpt" "$out/model"
rm -f "$out/model/generation_config.json"
for r in $(seq "$repeats"); do
    for p in "${prompts[@]}"; do
        for mode in plain mtp; do
            extra=()
            [[ $mode == mtp ]] && extra=(--speculative mtp)
            RAYON_NUM_THREADS=$threads ./target/release/v3lab generate --checkpoint "$out/model" --prompt "$p" \
                --max-new-tokens "$new" --json "${extra[@]}" >> "$out/$mode.jsonl"
        done
    done
    "$python" benches/transformers_generate.py "$out/model" --threads $threads --new-tokens "$new" --repeats 1 \
        --prompt "${prompts[@]}" >> "$out/transformers.jsonl" 2>> "$out/transformers.log"
done
"$python" - "$out" <<'PY'
import json, pathlib, platform, statistics, sys
out = pathlib.Path(sys.argv[1])
by = {m: [json.loads(l) for l in (out / f"{m}.jsonl").read_text().splitlines()] for m in ("plain", "mtp", "transformers")}
hf = by["transformers"][0]
def rate(mode):
    return statistics.median(r["decode_tokens_per_sec"] for r in by[mode])
base = rate("transformers")
same = all(a["ids"] == b["ids"] for a, b in zip(by["plain"], by["mtp"])) and \
    all(a["ids"] == b["ids"] for a, b in zip(by["plain"][: len(by["transformers"])], by["transformers"]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {cpu}, {len(by['plain'])} runs per mode, threads 2; torch {hf['torch']}, transformers {hf['transformers']}")
print(f"greedy ids identical across the three: {same}")
print("| decoder | decode tokens/s (median) | vs transformers | MTP acceptance | tokens per main forward |")
print("|---|---:|---:|---:|---:|")
for mode, name in (("transformers", "transformers generate"), ("plain", "v3lab"), ("mtp", "v3lab --speculative mtp")):
    acc = tpf = "–"
    if mode == "mtp":
        acc = f"{100 * sum(r['accepted'] for r in by[mode]) / max(1, sum(r['drafted'] for r in by[mode])):.1f}%"
        tpf = f"{statistics.median(r['tokens_per_forward'] for r in by[mode]):.2f}"
    print(f"| {name} | {rate(mode):.1f} | {rate(mode) / base:.2f}× | {acc} | {tpf} |")
print(f"speculative speed-up over plain v3lab: {rate('mtp') / rate('plain'):.2f}×")
PY
