#!/usr/bin/env bash
# Training speed on the CPU, side by side in one run: v3lab (the `train_throughput` bench),
# transformers' DeepseekV3ForCausalLM (benches/transformers_train.py) and the public
# DeepSeek-V3 code's own PyTorch model, inference/model.py run eagerly
# (benches/modelpy_train.py), train the same model, configs/compare-cpu (ablation-small
# without MTP, 4 expert groups keep 2), from random weights with AdamW on 8 × 256 random
# tokens, interleaved ROUNDS times, one process at a time; the table gives the medians.
#
#   benches/compare-cpu.sh [ROUNDS] [STEPS]
#
# Threads: 2 (RAYON_NUM_THREADS for v3lab, torch.set_num_threads for the others). PyTorch
# and transformers come from $V3LAB_BENCH_PYTHON, or a virtual environment this script makes
# once in target/bench-venv (git ignores target/; about 6 GB with torch's CUDA wheels).
#
# model.py (and the kernel.py it imports) are read at run time from the folder named by
# $V3LAB_DEEPSEEK_V3_INFERENCE, e.g.
#   git clone https://github.com/deepseek-ai/DeepSeek-V3 ~/DeepSeek-V3
#   V3LAB_DEEPSEEK_V3_INFERENCE=~/DeepSeek-V3/inference benches/compare-cpu.sh
# Unset, the script clones that repository once (--depth 1) into target/deepseek-v3 and uses
# its inference/; if that fails (no network), or the variable is `off`, the model.py row is
# left out and the other two are printed. The table's header names the model.py commit when
# the folder is in a git checkout (or $V3LAB_DEEPSEEK_V3_COMMIT says it). What
# modelpy_train.py adapts to train inference code (f32, initial weights, a training forward
# over all positions, the caches, the gate's in-place mask) is listed at its top.
# Only ratios measured in one run mean anything: a loaded machine slows every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
steps=${2:-4}
threads=2
config=configs/compare-cpu
source benches/bench-python.sh
dsv3=${V3LAB_DEEPSEEK_V3_INFERENCE:-}
dsv3_commit=${V3LAB_DEEPSEEK_V3_COMMIT:-}
dsv3_note=""
if [[ "$dsv3" == off ]]; then
    dsv3="" dsv3_note="left out (V3LAB_DEEPSEEK_V3_INFERENCE=off)"
elif [[ -n "$dsv3" ]]; then
    [[ -f "$dsv3/model.py" && -f "$dsv3/kernel.py" ]] || {
        echo "V3LAB_DEEPSEEK_V3_INFERENCE=$dsv3: no model.py and kernel.py there" >&2; exit 1; }
else
    if [[ ! -f target/deepseek-v3/inference/model.py ]]; then
        echo "cloning github.com/deepseek-ai/DeepSeek-V3 into target/deepseek-v3 (for model.py)" >&2
        rm -rf target/deepseek-v3.tmp
        if GIT_TERMINAL_PROMPT=0 timeout 120 git clone --quiet --depth 1 \
            https://github.com/deepseek-ai/DeepSeek-V3 target/deepseek-v3.tmp >/dev/null 2>&1; then
            mv target/deepseek-v3.tmp target/deepseek-v3
        else
            rm -rf target/deepseek-v3.tmp
        fi
    fi
    if [[ -f target/deepseek-v3/inference/model.py ]]; then
        dsv3=target/deepseek-v3/inference
    else
        dsv3_note="left out (could not clone github.com/deepseek-ai/DeepSeek-V3; set V3LAB_DEEPSEEK_V3_INFERENCE to its inference/ folder)"
    fi
fi
if [[ -n "$dsv3" && -z "$dsv3_commit" ]] && git -C "$dsv3" ls-files --error-unmatch model.py >/dev/null 2>&1; then
    dsv3_commit=$(git -C "$dsv3" rev-parse --short=12 HEAD)
    git -C "$dsv3" diff --quiet HEAD -- model.py kernel.py || dsv3_commit+="-dirty"
fi
[[ -z "$dsv3_note" ]] || echo "note: the DeepSeek-V3 model.py row is $dsv3_note" >&2
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
    if [[ -n "$dsv3" ]]; then
        "$python" benches/modelpy_train.py $config --model-py "$dsv3" ${dsv3_commit:+--commit "$dsv3_commit"} \
            --threads $threads --batch 8 --steps "$steps" >> "$out/modelpy.jsonl" 2>> "$out/modelpy.log" ||
            { tail -n 20 "$out/modelpy.log" >&2; exit 1; }
    fi
done
"$python" - "$out" "$threads" "$dsv3_note" <<'PY'
import json, pathlib, platform, re, statistics, sys
out, threads, dsv3_note = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
text = (out / "v3lab.txt").read_text()
v3 = {
    "tokens_per_sec": [float(x) for x in re.findall(r"train step: [\d.]+ s\s+(\d+) tokens/s", text)],
    "threads_busy": [float(x) / 100 for x in re.findall(r"\((\d+)% of \d+ threads busy\)", text)],
}
hf_runs = [json.loads(l) for l in (out / "transformers.jsonl").read_text().splitlines()]
hf = {k: [r[k] for r in hf_runs] for k in ("tokens_per_sec", "threads_busy")}
mp_file = out / "modelpy.jsonl"
mp_runs = [json.loads(l) for l in mp_file.read_text().splitlines()] if mp_file.exists() else []
mp = {k: [r[k] for r in mp_runs] for k in ("tokens_per_sec", "threads_busy")}
med = statistics.median
base = med(hf["tokens_per_sec"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {cpu}; threads {threads}; {len(hf_runs)} interleaved rounds; torch {hf_runs[0]['torch']}, "
      f"transformers {hf_runs[0]['transformers']} (experts: {hf_runs[0]['experts_implementation']}); "
      + (f"DeepSeek-V3 model.py {mp_runs[0]['commit'] or '(commit unknown)'} (attn_impl {mp_runs[0]['attn_impl']})"
         if mp_runs else f"DeepSeek-V3 model.py {dsv3_note}"))
print("| trainer | tokens/s (median) | range | vs transformers | threads busy |")
print("|---|---:|---:|---:|---:|")
rows = [("v3lab CpuBackend", v3), ("transformers DeepseekV3ForCausalLM", hf)]
if mp_runs:
    rows.append(("DeepSeek-V3 model.py (eager)", mp))
for name, d in rows:
    t = d["tokens_per_sec"]
    print(f"| {name} | {med(t):.0f} | {min(t):.0f}–{max(t):.0f} | {med(t) / base:.2f}× | {med(d['threads_busy']):.0%} |")
PY
