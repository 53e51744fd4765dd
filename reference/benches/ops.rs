//! Criterion benchmarks of the CPU backend's operations at the shapes of one training step of
//! `configs/ablation-small` (batch 8 × 256 tokens: N = 2048 rows of width 256), each
//! forward and backward side by side, plus the MoE layer (gate, routing, dispatch and the
//! expert GEMMs) forward and backward as the model runs it.
//!
//! `cargo bench -p v3lab-reference --bench ops` (criterion's report in target/criterion;
//! `-- linear` for a subset). Throughput is in elements of the main input, so criterion's
//! "elem/s" compares across shapes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::moe::{moe_forward, train::moe_backward};
use v3lab_reference::params::FfnParams;
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::{AdamWStep, CpuBackend, ModelConfig};

const BATCH: usize = 8;
const SEQ: usize = 256;
const N: usize = BATCH * SEQ;

fn config() -> ModelConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ablation-small");
    ModelConfig::from_file(&dir.join("config.json")).expect("configs/ablation-small/config.json")
}

fn rand(rng: &mut ChaCha8Rng, shape: &[usize]) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0f32..1.0))
}

fn elements(shape: &[usize]) -> Throughput {
    Throughput::Elements(shape.iter().product::<usize>() as u64)
}

/// The model's projections at N rows: (what, in, out).
fn linear(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut group = c.benchmark_group("linear");
    let q_width = cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim);
    for (what, k, m) in [
        ("wq_a", cfg.dim, cfg.q_lora_rank.unwrap_or(cfg.dim)),
        ("wq_b", cfg.q_lora_rank.unwrap_or(cfg.dim), q_width),
        ("dense w1", cfg.dim, cfg.inter_dim),
        ("dense w2", cfg.inter_dim, cfg.dim),
        ("head", cfg.dim, cfg.vocab_size),
    ] {
        let (x, w, dy) = (rand(&mut rng, &[N, k]), rand(&mut rng, &[m, k]), rand(&mut rng, &[N, m]));
        group.throughput(elements(&[N, k]));
        let id = format!("{what} [{N},{k}]·[{m},{k}]ᵀ");
        group.bench_function(BenchmarkId::new("forward", &id), |bench| bench.iter(|| b.linear(&x, &w).unwrap()));
        group.bench_function(BenchmarkId::new("backward", &id), |bench| {
            bench.iter(|| b.linear_backward(&x, &w, &dy).unwrap())
        });
    }
    group.finish();
}

fn attention(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (h, dk, dv) = (cfg.n_heads, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim, cfg.v_head_dim);
    let (q, k) = (rand(&mut rng, &[BATCH, SEQ, h, dk]), rand(&mut rng, &[BATCH, SEQ, h, dk]));
    let v = rand(&mut rng, &[BATCH, SEQ, h, dv]);
    let scale = 1.0 / (dk as f32).sqrt();
    let (out, lse) = b.attention_forward(&q, &k, &v, scale, 0).unwrap();
    let dout = rand(&mut rng, &[BATCH, SEQ, h, dv]);
    let mut group = c.benchmark_group("attention");
    group.throughput(elements(&[BATCH, SEQ, h]));
    let id = format!("[{BATCH},{SEQ},{h},{dk}] causal");
    group.bench_function(BenchmarkId::new("forward", &id), |bench| {
        bench.iter(|| b.attention_forward(&q, &k, &v, scale, 0).unwrap())
    });
    group.bench_function(BenchmarkId::new("backward", &id), |bench| {
        bench.iter(|| b.attention_backward(&q, &k, &v, &out, &lse, &dout, scale, 0).unwrap())
    });
    group.finish();
}

/// The first MoE layer of a freshly initialised model on N random rows.
fn moe(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let params = init_params(&cfg, INIT_STD, 0).unwrap();
    let p = params
        .layers
        .iter()
        .find_map(|l| match &l.ffn {
            FfnParams::Moe(p) => Some(p.clone()),
            FfnParams::Dense(_) => None,
        })
        .expect("ablation-small has MoE layers");
    let x = rand(&mut rng, &[N, cfg.dim]);
    let dy = rand(&mut rng, &[N, cfg.dim]);
    let (_, _, saved) = moe_forward(&b, &cfg, &p, &x, true).unwrap();
    let saved = saved.expect("saved with save on");
    let logits = rand(&mut rng, &[N, cfg.n_routed_experts]);
    let spec = cfg.route_spec();
    let routing = b.route(&logits, p.gate_bias.as_ref(), &spec).unwrap();
    let mut group = c.benchmark_group("moe");
    group.throughput(elements(&[N, cfg.dim]));
    let id = format!("{N} tokens, {} experts top-{}", cfg.n_routed_experts, cfg.n_activated_experts);
    group.bench_function(BenchmarkId::new("route", &id), |bench| {
        bench.iter(|| b.route(&logits, p.gate_bias.as_ref(), &spec).unwrap())
    });
    group.bench_function(BenchmarkId::new("dispatch", &id), |bench| {
        bench.iter(|| b.expert_dispatch(&routing.indices, cfg.n_routed_experts).unwrap())
    });
    group.bench_function(BenchmarkId::new("layer forward", &id), |bench| {
        bench.iter(|| moe_forward(&b, &cfg, &p, &x, false).unwrap())
    });
    group.bench_function(BenchmarkId::new("layer forward, saving", &id), |bench| {
        bench.iter(|| moe_forward(&b, &cfg, &p, &x, true).unwrap())
    });
    group.bench_function(BenchmarkId::new("layer backward", &id), |bench| {
        bench.iter(|| moe_backward(&b, &cfg, &p, &dy, &saved, None).unwrap())
    });
    group.finish();
}

/// RMSNorm at the model width, SwiGLU at the dense FFN's width, forward and backward.
fn norm_activation(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, w, dy) = (rand(&mut rng, &[N, cfg.dim]), rand(&mut rng, &[cfg.dim]), rand(&mut rng, &[N, cfg.dim]));
    let (_, rstd) = b.rms_norm_forward(&x, &w, 1e-6).unwrap();
    let mut group = c.benchmark_group("rms_norm");
    group.throughput(elements(&[N, cfg.dim]));
    let id = format!("[{N},{}]", cfg.dim);
    group.bench_function(BenchmarkId::new("forward", &id), |bench| bench.iter(|| b.rms_norm_forward(&x, &w, 1e-6)));
    group.bench_function(BenchmarkId::new("backward", &id), |bench| {
        bench.iter(|| b.rms_norm_backward(&x, &w, &rstd, &dy).unwrap())
    });
    group.finish();
    let shape = [N, cfg.inter_dim];
    let (gate, up, dy) = (rand(&mut rng, &shape), rand(&mut rng, &shape), rand(&mut rng, &shape));
    let mut group = c.benchmark_group("swiglu");
    group.throughput(elements(&shape));
    let id = format!("{shape:?}");
    group.bench_function(BenchmarkId::new("forward", &id), |bench| bench.iter(|| b.swiglu_forward(&gate, &up)));
    group.bench_function(BenchmarkId::new("backward", &id), |bench| {
        bench.iter(|| b.swiglu_backward(&gate, &up, &dy).unwrap())
    });
    group.finish();
}

fn cross_entropy(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let logits = rand(&mut rng, &[N, cfg.vocab_size]);
    let targets = ArrayD::from_shape_simple_fn(IxDyn(&[N]), || rng.random_range(0..cfg.vocab_size as i64));
    let (_, lse) = b.cross_entropy_forward(&logits, &targets).unwrap();
    let mut group = c.benchmark_group("cross_entropy");
    group.throughput(elements(&[N, cfg.vocab_size]));
    let id = format!("[{N},{}]", cfg.vocab_size);
    group.bench_function(BenchmarkId::new("forward", &id), |bench| {
        bench.iter(|| b.cross_entropy_forward(&logits, &targets).unwrap())
    });
    group.bench_function(BenchmarkId::new("backward", &id), |bench| {
        bench.iter(|| b.cross_entropy_backward(&logits, &lse, &targets, 1.0 / N as f32).unwrap())
    });
    group.finish();
}

/// One AdamW update of the dense FFN's w1 (the largest matrix but the embedding).
fn adamw(c: &mut Criterion) {
    let cfg = config();
    let b = CpuBackend;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let shape = [cfg.inter_dim, cfg.dim];
    let (mut p, grad) = (rand(&mut rng, &shape), rand(&mut rng, &shape));
    let (mut m, mut v) = (ArrayD::zeros(IxDyn(&shape)), ArrayD::zeros(IxDyn(&shape)));
    let mut h = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 0, grad_scale: 1.0 };
    let mut group = c.benchmark_group("adamw");
    group.throughput(elements(&shape));
    group.bench_function(BenchmarkId::new("step", format!("{shape:?}")), |bench| {
        bench.iter(|| {
            h.step += 1;
            b.adamw_step(&mut p, &mut m, &mut v, &grad, &h).unwrap();
            black_box(&p);
        })
    });
    group.finish();
}

/// Short runs; no plots (criterion's plots need system fonts, which a bare machine lacks).
fn quick() -> Criterion {
    v3lab_reference::backend::tune_allocator();
    Criterion::default()
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = ops;
    config = quick();
    targets = linear, attention, moe, norm_activation, cross_entropy, adamw
}
criterion_main!(ops);
