#!/usr/bin/env bash
# Builds and packs everything gpu/experiments/device-run.sh needs into .gpu-bin/ (under the
# 64 MiB that may travel to the device machine), from the repository root:
#   bash gpu/experiments/pack.sh
# then one device run with carry [".gpu-bin"]:  bash gpu/experiments/device-run.sh
set -euo pipefail
cargo build --release -p v3lab -p v3lab-ablations --bins
../shared/tools/gpu-pack.sh -p v3lab-gpu -p v3lab-conformance
# The CLI and one ablation binary (the others train the same way), without symbols.
rm -f .gpu-bin/bin/ablate-aux-free .gpu-bin/bin/ablate-balance-scope
strip .gpu-bin/bin/v3lab .gpu-bin/bin/ablate-mtp
# The smoke preset's corpus: the device machine has no cargo registry to assemble it from.
# A one-step smoke run assembles and caches it here, only where it is not cached yet.
corpus=target/v3lab-cache/corpus-seed0-150000b-val5.jsonl
[[ -f $corpus ]] || ./target/release/ablate-mtp --preset smoke --seeds 1 --steps 1 --out target/pack-smoke >/dev/null
mkdir -p .gpu-bin/cache
cp "$corpus" .gpu-bin/cache/
echo ".gpu-bin: $(du -sm .gpu-bin | cut -f1) MiB (at most 64 may travel)"
