//! The first measurements of gpu/PERF.md, printed as one table (fits the 25 lines that
//! `.gpu-bin/run-all.sh` shows). Measures only with `V3LAB_PERF=1` and a CUDA device;
//! otherwise it says why it skipped. Times are medians of several runs after a warm-up
//! (which also compiles the kernels), each closed by a stream synchronisation.
//!
//!   V3LAB_PERF=1 .gpu-bin/bin/perf-*        (LD_LIBRARY_PATH with the CUDA libraries)

use ndarray::{ArrayD, IxDyn};
use std::time::Instant;
use v3lab_gpu::{CudaBackend, CudaIndices, Fp8Blocks};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::balance::AuxLoss;
use v3lab_reference::model::params::{Layout, ParamKind, Params};
use v3lab_reference::train::objective::{loss_and_grads, Objective};
use v3lab_reference::train::optim::{clip_coefficient, global_grad_norm, AdamW, AdamWConfig};
use v3lab_reference::{AttentionImpl, ModelConfig, Transformer};

/// Median wall time of `f` in seconds over `runs` runs after one warm-up.
fn time(b: &CudaBackend, runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    b.synchronize().unwrap();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            b.synchronize().unwrap();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// Fast deterministic uniform values in [-a, a) (xorshift): billions of weights in seconds.
fn fill(shape: &[usize], a: f32, state: &mut u64) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        ((*state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    })
}

fn config(json: serde_json::Value) -> ModelConfig {
    ModelConfig::from_json(&json).expect("a valid config")
}

/// The ablation size and the larger model of the issue (dim 2048, 16 layers, 64 experts top-6).
fn models() -> Vec<(&'static str, ModelConfig, [usize; 2])> {
    let ablation = config(serde_json::json!({
        "vocab_size": 8192, "dim": 512, "inter_dim": 1536, "moe_inter_dim": 256, "n_layers": 8, "n_dense_layers": 1,
        "n_heads": 8, "n_routed_experts": 32, "n_shared_experts": 1, "n_activated_experts": 4,
        "n_expert_groups": 4, "n_limited_groups": 2, "score_func": "sigmoid", "route_scale": 2.5,
        "q_lora_rank": 256, "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
        "max_seq_len": 2048,
    }));
    let larger = config(serde_json::json!({
        "vocab_size": 32768, "dim": 2048, "inter_dim": 8192, "moe_inter_dim": 512, "n_layers": 16, "n_dense_layers": 1,
        "n_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2, "n_activated_experts": 6,
        "n_expert_groups": 8, "n_limited_groups": 4, "score_func": "sigmoid", "route_scale": 2.5,
        "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "max_seq_len": 4096,
    }));
    vec![("ablation d512 L8 E32 k4", ablation, [8, 512]), ("larger d2048 L16 E64 k6", larger, [4, 1024])]
}

/// Random weights scaled as `nn.Linear`'s (1/√fan-in), norms 1, small selection biases.
fn random_model(b: &CudaBackend, cfg: &ModelConfig) -> Transformer<CudaBackend> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let host: Params<ArrayD<f32>> = Params::shapes(cfg, Layout::default())
        .try_map(|_, kind, shape| {
            Ok::<_, std::convert::Infallible>(match kind {
                ParamKind::Matrix => fill(shape, 1.0 / (shape[shape.len() - 1] as f32).sqrt(), &mut state),
                ParamKind::Norm => ArrayD::ones(IxDyn(shape)),
                ParamKind::SelectionBias => fill(shape, 0.01, &mut state),
            })
        })
        .unwrap_or_else(|never| match never {});
    Transformer::new(b, cfg.clone(), &host).expect("model on the device")
}

fn tokens(b: &CudaBackend, cfg: &ModelConfig, [batch, seq]: [usize; 2]) -> CudaIndices {
    let tokens =
        ArrayD::from_shape_fn(IxDyn(&[batch, seq]), |i| ((i[0] * 7919 + i[1] * 104729) % cfg.vocab_size) as i64);
    b.upload_indices(tokens.view()).unwrap()
}

fn forward_row(b: &CudaBackend, name: &str, cfg: &ModelConfig, shape: [usize; 2]) -> String {
    let model = random_model(b, cfg);
    let tok = tokens(b, cfg, shape);
    let t = time(b, 3, || {
        model.forward(b, &tok, AttentionImpl::Naive).unwrap();
    });
    let t_abs = time(b, 3, || {
        model.forward(b, &tok, AttentionImpl::Absorbed).unwrap();
    });
    let n = (shape[0] * shape[1]) as f64;
    format!("| forward {name}, {shape:?} | {:.0} tok/s naive, {:.0} tok/s absorbed |", n / t, n / t_abs)
}

/// One whole training step as the trainer takes it: every loss term with its gradients,
/// the global norm, clipping and AdamW. Returns the table row and the seconds per step.
fn train_row(b: &CudaBackend, name: &str, cfg: &ModelConfig, shape: [usize; 2]) -> (String, f64) {
    let mut model = random_model(b, cfg);
    let tok = tokens(b, cfg, shape);
    let obj = Objective { mtp_depth: cfg.n_mtp_layers, mtp_lambda: 0.3, aux: AuxLoss::None, aux_alpha: 0.0 };
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(b, adamw, &model.params).unwrap();
    let t = time(b, 3, || {
        let (_, grads, _) = loss_and_grads(b, &model, &tok, &obj).unwrap();
        let scale = clip_coefficient(global_grad_norm(b, &grads).unwrap(), 1.0);
        opt.update(b, &mut model.params, &grads, 1e-4, scale).unwrap();
    });
    let n = (shape[0] * shape[1]) as f64;
    (format!("| train step {name}, {shape:?} | {:.1} ms, {:.0} tok/s |", t * 1e3, n / t), t)
}

/// The model of `ablate-* --preset full` (`ablations/src/presets.rs`, `Preset::Full`: dim 512,
/// 8 layers, 8 heads, 64 experts top-6, byte vocabulary, sequences of 512) with one MTP module.
fn full_preset() -> ModelConfig {
    let (dim, heads) = (512, 8);
    config(serde_json::json!({
        "vocab_size": 260, "dim": dim, "inter_dim": 3 * dim, "moe_inter_dim": dim / 2,
        "n_layers": 8, "n_dense_layers": 1, "n_heads": heads,
        "n_routed_experts": 64, "n_shared_experts": 1, "n_activated_experts": 6,
        "n_expert_groups": 1, "n_limited_groups": 1, "score_func": "sigmoid", "route_scale": 1.0,
        "q_lora_rank": dim / 2, "kv_lora_rank": dim / 4, "qk_nope_head_dim": dim / heads,
        "qk_rope_head_dim": dim / heads / 2, "v_head_dim": dim / heads,
        "max_seq_len": 512, "original_seq_len": 512, "rms_norm_eps": 1e-6, "n_mtp_layers": 1,
    }))
}

fn main() {
    if std::env::var("V3LAB_PERF").as_deref() != Ok("1") {
        println!("skipped: set V3LAB_PERF=1 to measure (gpu/PERF.md)");
        return;
    }
    let (models, full) = (models(), full_preset()); // configs checked before a device is needed
    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
    if b.is_emulator() {
        println!("skipped: {} runs kernels on the CPU; its timings mean nothing", b.device_name());
        return;
    }
    println!("device: {} (compute capability {:?})", b.device_name(), b.compute_capability());
    println!("| what | result |\n|---|---|");

    // Copy bandwidth: 1 GiB device to device, read + write counted.
    let big = b.zeros(&[1 << 28]).unwrap();
    let t = time(&b, 5, || {
        b.device_copy(&big).unwrap();
    });
    let copy_gbs = 2.0 * (1u64 << 30) as f64 / t / 1e9;
    println!("| copy 1 GiB (cuMemcpyDtoD) | {copy_gbs:.0} GB/s |");
    drop(big);

    // Absorbed-MLA decode: one query per sequence over a T-long latent cache, every head
    // sharing it; bandwidth = cache bytes (read once) / time.
    for (batch, heads, keys) in [(32, 16, 4096), (8, 128, 4096), (64, 16, 16384)] {
        let (c, r) = (512, 64);
        let mut s = 1u64 << 20;
        let ql = b.upload(fill(&[batch, 1, heads, c], 1.0, &mut s).view()).unwrap();
        let qp = b.upload(fill(&[batch, 1, heads, r], 1.0, &mut s).view()).unwrap();
        let kv = b.upload(fill(&[batch, keys, c], 1.0, &mut s).view()).unwrap();
        let kp = b.upload(fill(&[batch, keys, r], 1.0, &mut s).view()).unwrap();
        let t = time(&b, 5, || {
            b.latent_attention_forward(&ql, &qp, &kv, &kp, 0.04, keys - 1).unwrap();
        });
        let gbs = (batch * keys * (c + r) * 4) as f64 / t / 1e9;
        println!(
            "| MLA decode B{batch} H{heads} T{keys} C{c} R{r} | {:.1} µs, {gbs:.0} GB/s of cache ({:.0}% of copy) |",
            t * 1e6,
            100.0 * gbs / copy_gbs
        );
    }

    // FP8 block-scaled GEMM (own kernel) and, for scale, cuBLAS SGEMM on the same shapes.
    for (m, n, k) in [(4096, 4096, 4096), (4096, 7168, 2048), (128, 7168, 2048)] {
        let mut s = 7u64;
        let a = b.upload(fill(&[m, k], 1.0, &mut s).view()).unwrap();
        let w = b.upload(fill(&[n, k], 1.0, &mut s).view()).unwrap();
        let qa = b.fp8_quantize(&a, Fp8Blocks::Tile1x128).unwrap();
        let qw = b.fp8_quantize(&w, Fp8Blocks::Block128x128).unwrap();
        let flops = 2.0 * (m * n * k) as f64;
        let t8 = time(&b, 5, || {
            b.fp8_gemm(&qa, &qw).unwrap();
        });
        let t32 = time(&b, 5, || {
            b.linear(&a, &w).unwrap();
        });
        println!(
            "| GEMM {m}×{n}×{k} | FP8 own kernel {:.1} TFLOP/s; cuBLAS SGEMM f32 {:.1} TFLOP/s; cuBLASLt FP8 not yet |",
            flops / t8 / 1e12,
            flops / t32 / 1e12
        );
    }

    for (name, cfg, shape) in &models {
        println!("{}", forward_row(&b, name, cfg, *shape));
    }
    let (row, _) = train_row(&b, models[0].0, &models[0].1, models[0].2);
    println!("{row}");
    let (row, step) = train_row(&b, "ablate full preset + MTP", &full, [16, 512]);
    println!("{row}");
    // ablate-mtp --preset full: 20,000 steps × 2 variants × 3 seeds (the baseline, without
    // MTP, costs a little less than this step).
    println!(
        "| ablate-mtp --preset full, training only | ≈ {:.1} h (120,000 steps at most this long) |",
        step * 120_000.0 / 3600.0
    );
}
