//! What an FP8-simulated linear layer costs against the f32 one, at a projection of
//! `configs/ablation-small` (batch 8 × 256 tokens, its dense `w1`): the plain f32 product,
//! the FP8 recipe with exact accumulation inside each 128 (quantise, then exact f64
//! partials: `fp8::gemm`'s fast path) and the recipe with the H100's measured accumulator
//! (`h100-promote-128`), which needs the bit-level simulation. The last runs on fewer rows
//! (its cost is linear in them); criterion's elem/s (rows × K) compares the three.
//!
//! `cargo bench -p v3lab-reference --bench fp8`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, ArrayD};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Duration;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::fp8::{quantize, Accumulator, Fp8Linear, Granularity, ScaleMode, E4M3};
use v3lab_reference::{CpuBackend, ModelConfig};

const TOKENS: usize = 8 * 256;
/// Rows for the bit-level simulation.
const SIMULATED_TOKENS: usize = 32;

fn fprop(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ablation-small");
    let cfg = ModelConfig::from_file(&dir.join("config.json")).expect("configs/ablation-small/config.json");
    let (k, m) = (cfg.dim, cfg.inter_dim);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut rand =
        |rows: usize, cols: usize| Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0f32..1.0));
    let (x, w) = (rand(TOKENS, k), rand(m, k));
    let mut group = c.benchmark_group("fp8 fprop");
    let id = |rows: usize| format!("dense w1 [{rows},{k}]·[{m},{k}]ᵀ");
    group.throughput(Throughput::Elements((TOKENS * k) as u64));
    let (xd, wd): (ArrayD<f32>, ArrayD<f32>) = (x.clone().into_dyn(), w.clone().into_dyn());
    group.bench_function(BenchmarkId::new("f32 linear", id(TOKENS)), |bench| {
        bench.iter(|| CpuBackend.linear(&xd, &wd).unwrap())
    });
    let exact = Fp8Linear::default(); // exact within each 128, promoted
    group.bench_function(BenchmarkId::new("fp8, exact within 128", id(TOKENS)), |bench| {
        bench.iter(|| exact.forward(x.view(), w.view()).unwrap())
    });
    let h100 = Fp8Linear { accumulator: Accumulator::H100_PROMOTE_128, ..Fp8Linear::default() };
    let few = x.slice(ndarray::s![..SIMULATED_TOKENS, ..]).to_owned();
    group.throughput(Throughput::Elements((SIMULATED_TOKENS * k) as u64));
    group.bench_function(BenchmarkId::new("fp8, h100-promote-128 (bit level)", id(SIMULATED_TOKENS)), |bench| {
        bench.iter(|| h100.forward(few.view(), w.view()).unwrap())
    });
    group.finish();

    // The steps of the fast path alone, on the activation x [TOKENS, K].
    let mut group = c.benchmark_group("fp8 steps");
    group.throughput(Throughput::Elements((TOKENS * k) as u64));
    group.bench_function(BenchmarkId::new("quantize 1x128 tiles", id(TOKENS)), |bench| {
        bench.iter(|| quantize(x.view(), E4M3, Granularity::Tile(128), ScaleMode::F32))
    });
    group.bench_function(BenchmarkId::new("quantize transposed (128x1 tiles)", id(TOKENS)), |bench| {
        bench.iter(|| quantize(x.t(), E4M3, Granularity::Tile(128), ScaleMode::F32))
    });
    let q = quantize(x.view(), E4M3, Granularity::Tile(128), ScaleMode::F32);
    group.bench_function(BenchmarkId::new("decode to f64", id(TOKENS)), |bench| bench.iter(|| q.values_f64()));
    group.finish();
}

fn quick() -> Criterion {
    v3lab_reference::backend::tune_allocator();
    Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = fp8;
    config = quick();
    targets = fprop
}
criterion_main!(fp8);
