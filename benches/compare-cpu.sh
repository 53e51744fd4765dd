#!/usr/bin/env bash
# Training speed on the CPU, side by side in one run: v3lab (the `train_throughput` bench) and
# transformers' DeepseekV3ForCausalLM (benches/transformers_train.py) train the same model,
# configs/compare-cpu (ablation-small without MTP, 4 expert groups keep 2), from random
# weights with AdamW on 8 × 256 random tokens, interleaved ROUNDS times, one process at a
# time; the table gives the medians.
#
#   benches/compare-cpu.sh [ROUNDS] [STEPS]
#
# Threads: 2 (RAYON_NUM_THREADS for v3lab, torch.set_num_threads for transformers). PyTorch
# and transformers come from $V3LAB_BENCH_PYTHON, or a virtual environment this script makes
# once in target/bench-venv (git ignores target/; about 6 GB with torch's CUDA wheels).
# Only ratios measured in one run mean anything: a loaded machine slows every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
steps=${2:-4}
threads=2
config=configs/compare-cpu
source benches/bench-python.sh
bench=$(cargo bench --no-run -p v3lab-reference --bench train_throughput --message-format=json 2>/dev/null |
    "$python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "train_throughput" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
    echo "round $r of $rounds" >&2
    RAYON_NUM_THREADS=$threads V3LAB_BENCH_CONFIG=$config V3LAB_BENCH_BATCH=8 V3LAB_BENCH_STEPS=$steps \
        "$bench" --bench >> "$out/v3lab.txt"
    "$python" benches/transformers_train.py $config --threads $threads --batch 8 --steps "$steps" \
        >> "$out/transformers.jsonl" 2>> "$out/transformers.log"
done
"$python" - "$out" "$threads" <<'PY'
import json, pathlib, platform, re, statistics, sys
out, threads = pathlib.Path(sys.argv[1]), int(sys.argv[2])
text = (out / "v3lab.txt").read_text()
v3 = {
    "tokens_per_sec": [float(x) for x in re.findall(r"train step: [\d.]+ s\s+(\d+) tokens/s", text)],
    "threads_busy": [float(x) / 100 for x in re.findall(r"\((\d+)% of \d+ threads busy\)", text)],
}
hf_runs = [json.loads(l) for l in (out / "transformers.jsonl").read_text().splitlines()]
hf = {k: [r[k] for r in hf_runs] for k in ("tokens_per_sec", "threads_busy")}
med = statistics.median
base = med(hf["tokens_per_sec"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {cpu}; threads {threads}; {len(hf_runs)} interleaved rounds; torch {hf_runs[0]['torch']}, "
      f"transformers {hf_runs[0]['transformers']} (experts: {hf_runs[0]['experts_implementation']})")
print("| trainer | tokens/s (median) | range | vs transformers | threads busy |")
print("|---|---:|---:|---:|---:|")
for name, d in (("v3lab CpuBackend", v3), ("transformers DeepseekV3ForCausalLM", hf)):
    t = d["tokens_per_sec"]
    print(f"| {name} | {med(t):.0f} | {min(t):.0f}–{max(t):.0f} | {med(t) / base:.2f}× | {med(d['threads_busy']):.0%} |")
PY
