//! Training throughput of the CPU reference on an ablation-sized DeepSeek-V3
//! (`configs/ablation-small`: 4 layers, dim 256, 16 routed experts top-4 + 1 shared, MLA,
//! one MTP module, sequences of 256): full training steps (forward, backward of the
//! total loss, clipping, AdamW, bias update) on random tokens.
//!
//! `cargo bench -p v3lab-reference --bench train_throughput` prints the step time, training
//! tokens/s and achieved GFLOP/s. FLOPs are counted from the configuration: the matrix
//! products of the forward (projections, experts actually run, attention scores and
//! values over the causal half, head, MTP module) times 3 for forward + backward.
//! Environment: `V3LAB_BENCH_STEPS` (default 4), `V3LAB_BENCH_BATCH` (default 4),
//! `V3LAB_BENCH_CONFIG` (a folder with `config.json` and `train.json`).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;
use v3lab_reference::model::config::ModelConfig;
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{CpuBackend, Transformer};

/// Forward FLOPs (2 per multiply-add) of one token at sequence length `seq`.
fn forward_flops_per_token(c: &ModelConfig, seq: usize) -> f64 {
    let (d, h) = (c.dim as f64, c.n_heads as f64);
    let (dn, dr, dv, kv) =
        (c.qk_nope_head_dim as f64, c.qk_rope_head_dim as f64, c.v_head_dim as f64, c.kv_lora_rank as f64);
    let q = match c.q_lora_rank {
        Some(r) => d * r as f64 + r as f64 * h * (dn + dr),
        None => d * h * (dn + dr),
    };
    let keys = (seq as f64 + 1.0) / 2.0;
    let attention = q + d * (kv + dr) + kv * h * (dn + dv) + h * dv * d + keys * h * (dn + dr + dv);
    let expert = 3.0 * d * c.moe_inter_dim as f64;
    let ffn = |layer: usize| {
        if c.is_moe_layer(layer) {
            d * c.n_routed_experts as f64 + expert * (c.n_activated_experts + c.n_shared_experts) as f64
        } else {
            3.0 * d * c.inter_dim as f64
        }
    };
    let blocks: f64 = (0..c.n_layers).map(|l| attention + ffn(l)).sum();
    let head = d * c.vocab_size as f64;
    let mtp: f64 = (0..c.n_mtp_layers).map(|k| 2.0 * d * d + attention + ffn(c.n_layers + k) + head).sum();
    2.0 * (blocks + head + mtp)
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; the
/// machine is shared, so wall time alone undercounts what the code can do).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> anyhow::Result<()> {
    v3lab_reference::backend::tune_allocator();
    let dir = std::env::var_os("V3LAB_BENCH_CONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ablation-small"));
    let model_cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let mut cfg = TrainConfig::from_file(&dir.join("train.json"))?;
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (steps, batch, seq) = (env("V3LAB_BENCH_STEPS", 4), env("V3LAB_BENCH_BATCH", 4), cfg.data.seq_len);
    cfg.steps = steps + 1;
    cfg.eval_every = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..256i64));

    let b = CpuBackend::default();
    let params = init_params(&model_cfg, INIT_STD, 0)?;
    let model = Transformer::new(&b, model_cfg.clone(), &params)?;
    let counts = v3lab_reference::Params::shapes(&model_cfg, Default::default()).counts(&model_cfg);
    let mut trainer = Trainer::new(&b, model, cfg, Batches::Fixed(tokens))?;

    let threads = rayon::current_num_threads();
    println!(
        "model: {} layers, dim {}, {} routed experts top-{} + {} shared, MTP depth {}, vocab {}; {} parameters \
         ({} activated per token, {} in MTP); batch {batch} × seq {seq}; {threads} threads",
        model_cfg.n_layers,
        model_cfg.dim,
        model_cfg.n_routed_experts,
        model_cfg.n_activated_experts,
        model_cfg.n_shared_experts,
        model_cfg.n_mtp_layers,
        model_cfg.vocab_size,
        counts.total + counts.mtp,
        counts.activated,
        counts.mtp
    );
    let warm = Instant::now();
    trainer.train_step()?;
    println!("warm-up step: {:.2} s", warm.elapsed().as_secs_f64());
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..steps {
        trainer.train_step()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens = (batch * seq * steps) as f64;
    let flops = 3.0 * forward_flops_per_token(&model_cfg, seq) * tokens;
    println!(
        "train step: {:.3} s   {:.0} tokens/s   {:.2} GFLOP/s   ({:.1} MFLOP per token, forward + backward)",
        secs / steps as f64,
        tokens / secs,
        flops / secs / 1e9,
        flops / tokens / 1e6
    );
    if let (Some(a), Some(b)) = (cpu_start, cpu_seconds()) {
        let cpu = b - a;
        println!(
            "CPU time: {:.3} core-s per step ({:.0}% of {threads} threads busy): {:.0} tokens/s and {:.2} GFLOP/s \
             per busy core-second × {threads} = {:.0} tokens/s on {threads} idle cores",
            cpu / steps as f64,
            100.0 * cpu / secs / threads as f64,
            tokens / cpu,
            flops / cpu / 1e9,
            tokens / cpu * threads as f64
        );
    }
    Ok(())
}
