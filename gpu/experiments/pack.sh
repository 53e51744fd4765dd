#!/usr/bin/env bash
# Builds and packs everything gpu/experiments/device-run.sh needs into .gpu-bin/ (what
# travels to the device machine, with the working tree, is at most 64 MiB), from the
# repository root:
#   bash gpu/experiments/pack.sh
# then one device run with carry [".gpu-bin"]:  bash gpu/experiments/device-run.sh
set -euo pipefail
cargo build --release -p v3lab -p v3lab-ablations --bins
../shared/tools/gpu-pack.sh -p v3lab-gpu -p v3lab-conformance
# The CLI and one ablation binary (the others train the same way), without symbols.
rm -f .gpu-bin/bin/ablate-aux-free .gpu-bin/bin/ablate-balance-scope .gpu-bin/bin/ablate-fp8
strip .gpu-bin/bin/v3lab .gpu-bin/bin/ablate-mtp
# The smoke preset's corpus: the device machine has no cargo registry to assemble it from.
# A one-step smoke run assembles and caches it here, only where it is not cached yet.
corpus=target/v3lab-cache/corpus-seed0-150000b-val5.jsonl
[[ -f $corpus ]] || ./target/release/ablate-mtp --preset smoke --seeds 1 --steps 1 --out target/pack-smoke >/dev/null
mkdir -p .gpu-bin/cache
cp "$corpus" .gpu-bin/cache/
# Unpacked, binaries and goldens came to 66 MiB on 2026-12-06, over the limit before the
# working tree counts: they travel as one gzip'd tar (37 MiB), which device-run.sh unpacks
# first (for the pieces run alone: tar -C .gpu-bin -xzf .gpu-bin/payload.tar.gz).
tar -C .gpu-bin -czf .gpu-bin/payload.tar.gz bin goldens cache
rm -rf .gpu-bin/bin .gpu-bin/goldens .gpu-bin/cache
pack=$(du -sm .gpu-bin | cut -f1)
tree=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) >> 20 ))
echo ".gpu-bin: ${pack} MiB packed, the tracked tree ${tree} MiB: $((pack + tree)) of the 64 that may travel"
(( pack + tree <= 64 )) || { echo "over the limit: pack fewer binaries" >&2; exit 1; }
