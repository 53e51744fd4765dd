#!/usr/bin/env bash
# Everything the GPU issues need from an H100, in one device call (about 6 minutes), with
# every output under $OUT. Here first:  bash gpu/experiments/pack.sh
# then a device run with carry [".gpu-bin"]:  bash gpu/experiments/device-run.sh
# Afterwards, here: cargo run --release -- fp8 fit --measurements <files_at>/measured.safetensors
set -u
out=${OUT:?set OUT to the folder that comes back}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $d ]] && export LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}
done
# pack.sh sends the binaries, goldens and corpus as one archive.
[[ -f .gpu-bin/payload.tar.gz ]] && tar -C .gpu-bin -xzf .gpu-bin/payload.tar.gz
export V3LAB_GOLDENS=$PWD/.gpu-bin/goldens
step() { echo "== $1 (exit $2)" | tee -a "$out/summary.txt"; }

nvidia-smi >"$out/nvidia-smi.txt" 2>&1; step nvidia-smi $?

# Issue 5: the conformance suite, whole output, then every packed test binary.
for t in .gpu-bin/bin/backends-*; do "$t" --test-threads=1 --nocapture >"$out/backends.txt" 2>&1; step backends $?; done
bash .gpu-bin/run-all.sh >"$out/run-all.txt" 2>&1; step run-all $?
grep -E "^(===|test result)|FAILED|panicked|skipped" "$out/run-all.txt" | head -60

# Issue 5: the CLI on the GPU, whole forward and decode, against the CPU.
ckpt=.gpu-bin/goldens/official-v3-tiny
for mode in "" "--decode"; do
  .gpu-bin/bin/v3lab logits --checkpoint $ckpt --tokens examples/tokens.safetensors \
    --out "$out/cuda${mode:+-decode}.safetensors" --backend cuda $mode >>"$out/cli.txt" 2>&1; step "logits cuda $mode" $?
done
.gpu-bin/bin/v3lab logits --checkpoint $ckpt --tokens examples/tokens.safetensors --out "$out/cpu.safetensors" \
  >>"$out/cli.txt" 2>&1; step "logits cpu" $?

# Training on the GPU: the CLI on the training goldens (5 steps, both backends; their
# metrics side by side), and the smoke ablation end to end on the GPU.
golden=.gpu-bin/goldens/train-v3-tiny
for be in cuda cpu; do
  .gpu-bin/bin/v3lab train --checkpoint $golden --tokens $golden/expected.safetensors --config $golden/train.json \
    --out "$out/train-$be" --backend $be --quiet >>"$out/train.txt" 2>&1; step "train $be" $?
done
paste -d'\n' "$out/train-cuda/metrics.jsonl" "$out/train-cpu/metrics.jsonl" >>"$out/train.txt" 2>&1
.gpu-bin/bin/ablate-mtp --preset smoke --seeds 1 --backend cuda --cache-dir .gpu-bin/cache \
  --out "$out/ablate-mtp-smoke-cuda" >>"$out/ablate.txt" 2>&1; step "ablate-mtp smoke cuda" $?

# Issue 3: the FP8 accumulation experiment (fit afterwards, here).
.gpu-bin/bin/v3lab fp8 probe --out "$out/probe.safetensors" >>"$out/fp8.txt" 2>&1; step "fp8 probe" $?
python3 gpu/experiments/fp8_accum_probe.py "$out/probe.safetensors" "$out/measured.safetensors" >>"$out/fp8.txt" 2>&1
step "fp8 measure" $?
rm -f "$out/probe.safetensors" # measured.safetensors holds the inputs too

# Issue 5: timings, ours (perf.rs) and cuBLASLt's FP8 through PyTorch on the same shapes.
for t in .gpu-bin/bin/perf-*; do V3LAB_PERF=1 "$t" >"$out/perf.txt" 2>&1; step perf $?; done
python3 gpu/experiments/fp8_gemm_bench.py >"$out/fp8-bench.txt" 2>&1; step "fp8 cuBLASLt bench" $?
cat "$out/summary.txt" "$out/perf.txt" "$out/fp8-bench.txt" | tail -60
