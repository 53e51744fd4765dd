//! What a training step costs in each GEMM precision (DeepSeek-V3 §3.3): f32, BF16, the FP8
//! recipe and its variants, on the ablation-sized model (`configs/ablation-small`, batch 4 ×
//! 256 by default), side by side in one process, rounds interleaved so that a change in the
//! machine's load falls on every variant alike.
//!
//! `cargo bench -p v3lab-reference --bench precision_step` prints, per variant, the median
//! step time, the CPU time and the ratio to f32. The bit-level accumulators (`h100`,
//! `h100-promote-128`) are measured on one step only (`V3LAB_BENCH_BIT_LEVEL=0` skips them).
//! Environment: `V3LAB_BENCH_ROUNDS` (default 3), `V3LAB_BENCH_BATCH` (default 4),
//! `V3LAB_BENCH_ONLY` (comma-separated parts of variant names; f32 always runs).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;
use v3lab_reference::model::config::ModelConfig;
use v3lab_reference::train::config::{Fp8Options, GemmPrecision};
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{CpuBackend, Transformer};

/// CPU seconds (user + system) of this process so far (Linux `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, s)| s.split_whitespace().collect());
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

struct Variant {
    name: &'static str,
    precision: GemmPrecision,
    fp8: Option<Fp8Options>,
    /// Bit-level accumulator emulation: one step, outside the rounds.
    bit_level: bool,
}

fn fp8(accumulator: &str, scaling: &str, gradient_blocks: bool) -> Option<Fp8Options> {
    Some(Fp8Options { accumulator: accumulator.into(), scaling: scaling.into(), gradient_blocks, ..Default::default() })
}

fn main() -> anyhow::Result<()> {
    v3lab_reference::backend::tune_allocator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ablation-small");
    let model_cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let base = TrainConfig::from_file(&dir.join("train.json"))?;
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (rounds, batch, seq) = (env("V3LAB_BENCH_ROUNDS", 3), env("V3LAB_BENCH_BATCH", 4), base.data.seq_len);
    let bit_level = env("V3LAB_BENCH_BIT_LEVEL", 1) != 0;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..256i64));
    let variants = [
        Variant { name: "f32", precision: GemmPrecision::F32, fp8: None, bit_level: false },
        Variant { name: "bf16", precision: GemmPrecision::Bf16, fp8: None, bit_level: false },
        Variant { name: "fp8 (the recipe)", precision: GemmPrecision::Fp8, fp8: None, bit_level: false },
        Variant {
            name: "fp8, per-tensor scaling",
            precision: GemmPrecision::Fp8,
            fp8: fp8("exact-promote-128", "tensor", false),
            bit_level: false,
        },
        Variant {
            name: "fp8, 128x128 gradient blocks",
            precision: GemmPrecision::Fp8,
            fp8: fp8("exact-promote-128", "tile", true),
            bit_level: false,
        },
        Variant {
            name: "fp8, E4M3 attention output",
            precision: GemmPrecision::Fp8,
            fp8: Some(Fp8Options { attention_output_e5m6: false, ..Default::default() }),
            bit_level: false,
        },
        Variant {
            name: "fp8, h100-promote-128 (bit level)",
            precision: GemmPrecision::Fp8,
            fp8: fp8("h100-promote-128", "tile", false),
            bit_level: true,
        },
        Variant {
            name: "fp8, h100 per-tensor, no promotion (bit level)",
            precision: GemmPrecision::Fp8,
            fp8: fp8("h100", "tensor", false),
            bit_level: true,
        },
    ];
    // `V3LAB_BENCH_ONLY=a,b`: only the variants whose names contain one of these (f32 always).
    let only = std::env::var("V3LAB_BENCH_ONLY").ok();
    let keep = |v: &Variant| {
        v.precision == GemmPrecision::F32 || only.as_deref().is_none_or(|o| o.split(',').any(|p| v.name.contains(p)))
    };
    let variants: Vec<Variant> = variants.into_iter().filter(keep).collect();
    let b = CpuBackend::default();
    let params = init_params(&model_cfg, INIT_STD, 0)?;
    let mut trainers = Vec::new();
    for v in &variants {
        let cfg = TrainConfig {
            steps: rounds + 2,
            eval_every: 0,
            precision: v.precision,
            fp8: v.fp8.clone(),
            ..base.clone()
        };
        let model = Transformer::new(&b, model_cfg.clone(), &params)?;
        let mut trainer = Trainer::new(&b, model, cfg, Batches::Fixed(tokens.clone()))?;
        if !v.bit_level {
            trainer.train_step()?; // warm-up
        }
        trainers.push(trainer);
    }
    println!(
        "configs/ablation-small, batch {batch} × {seq} tokens, {} threads, {rounds} interleaved rounds",
        rayon::current_num_threads()
    );
    let mut times: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (v, trainer)) in variants.iter().zip(&mut trainers).enumerate() {
            if v.bit_level {
                continue;
            }
            let (wall, cpu) = (Instant::now(), cpu_seconds());
            trainer.train_step()?;
            times[i].push((wall.elapsed().as_secs_f64(), cpu_seconds() - cpu));
        }
    }
    if bit_level {
        for (i, (v, trainer)) in variants.iter().zip(&mut trainers).enumerate() {
            if v.bit_level {
                let (wall, cpu) = (Instant::now(), cpu_seconds());
                trainer.train_step()?;
                times[i].push((wall.elapsed().as_secs_f64(), cpu_seconds() - cpu));
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let f32_cpu = median(times[0].iter().map(|t| t.1).collect());
    println!("| variant | step (s, median) | CPU (core-s) | CPU vs f32 |");
    println!("|---|---:|---:|---:|");
    for (v, t) in variants.iter().zip(times) {
        if t.is_empty() {
            continue;
        }
        let (wall, cpu) = (median(t.iter().map(|t| t.0).collect()), median(t.iter().map(|t| t.1).collect()));
        println!("| {} | {wall:.3} | {cpu:.3} | {:.2}× |", v.name, cpu / f32_cpu);
    }
    Ok(())
}
