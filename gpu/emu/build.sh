#!/usr/bin/env bash
# Builds v3lab's CUDA emulator (see cuda_emu.h) into target/cuda-emu: libcuda.so, libnvrtc.so
# and libcublas.so stand-ins, with cuda_emu.h beside them. To run the CUDA backend's tests on
# the CPU with it:
#   bash gpu/emu/build.sh && LD_LIBRARY_PATH=$PWD/target/cuda-emu cargo test --release -p v3lab-gpu
# Needs only g++. Nothing it runs is a GPU measurement: the device calls itself
# "v3lab CUDA emulator (CPU, not a GPU)".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../target/cuda-emu}"
mkdir -p "$out"
flags=(-std=c++17 -O2 -g -fPIC -shared -pthread -Wall -Wextra -Wno-unused-parameter)
g++ "${flags[@]}" -o "$out/libcuda.so" "$here/driver.cpp" -ldl
g++ "${flags[@]}" -o "$out/libnvrtc.so" "$here/nvrtc.cpp" -ldl
g++ "${flags[@]}" -o "$out/libcublas.so" "$here/cublas.cpp"
cp "$here/cuda_emu.h" "$out/cuda_emu.h"
# The emulator checks itself: right kernels run right, and each kind of bug it is meant to
# catch is reported.
g++ -std=c++17 -O1 -o "$out/selftest" "$here/selftest.cpp" -L"$out" -lcuda -lnvrtc -Wl,-rpath,"$out"
"$out/selftest" 2>"$out/selftest.stderr" || { cat "$out/selftest.stderr"; exit 1; }
echo "CUDA emulator in $out"
