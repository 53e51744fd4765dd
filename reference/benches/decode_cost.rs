//! What one decoding round costs at batch 1 on the CPU, and so what MTP speculative
//! decoding can gain here: a forward of the main model over 1, 2 and 3 new positions through
//! the absorbed latent cache (one plain step; verifying 1 or 2 drafts), and MTP module 1
//! over 1 and 2 positions (drafting after a rejected or an accepted round).
//!
//! With acceptance a, one round yields 1 + a tokens and costs `main(2) + mtp(1 + a)`, so the
//! speed-up over plain decoding is at most `(1 + a) · main(1) / (main(2) + mtp)`.
//! `cargo bench -p v3lab-reference --bench decode_cost` prints the table. Environment:
//! `V3LAB_BENCH_CHECKPOINT` (a trained checkpoint folder; default: `configs/ablation-small`
//! with seeded random weights), `V3LAB_BENCH_CONTEXT` (positions already cached, default 128),
//! `V3LAB_BENCH_REPS` (default 200).

use ndarray::Array2;
use std::path::PathBuf;
use std::time::Instant;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::mla::LayerCache;
use v3lab_reference::model::config::ModelConfig;
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::{checkpoint, mtp, AttentionImpl, CpuBackend, Decoder, Transformer};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Median seconds of `f` over `reps` runs.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() -> anyhow::Result<()> {
    v3lab_reference::backend::tune_allocator();
    let b = CpuBackend;
    let (cfg, params, source) = match std::env::var_os("V3LAB_BENCH_CHECKPOINT") {
        Some(dir) => {
            let ckpt = checkpoint::load(&PathBuf::from(&dir))?;
            (ckpt.config, ckpt.params, PathBuf::from(dir).display().to_string())
        }
        None => {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/ablation-small");
            let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
            let params = init_params(&cfg, INIT_STD, 0)?;
            (cfg, params, "configs/ablation-small, random weights".into())
        }
    };
    anyhow::ensure!(cfg.n_mtp_layers > 0, "the model needs an MTP module");
    let (context, reps) = (env("V3LAB_BENCH_CONTEXT", 128), env("V3LAB_BENCH_REPS", 200));
    let model = Transformer::new(&b, cfg.clone(), &params)?;
    let ids = |n: usize| -> anyhow::Result<_> {
        let t = Array2::from_shape_fn((1, n), |(_, i)| (i * 7 % cfg.vocab_size) as i64);
        Ok(b.upload_indices(t.into_dyn().view())?)
    };
    let mut decoder = Decoder::new(&b, &model, AttentionImpl::Absorbed, 1, context + 4)?;
    let (hidden, _) = decoder.step_hidden(&b, &ids(context)?)?;
    let mut main = |n: usize| -> anyhow::Result<f64> {
        let input = ids(n)?;
        Ok(median(reps, || {
            decoder.step_hidden(&b, &input).expect("step");
            decoder.truncate(context);
        }))
    };
    let main_cost = [main(1)?, main(2)?, main(3)?];
    let mut cache = LayerCache::new(&b, &cfg, AttentionImpl::Absorbed, 1, context + 4)?;
    let h = b.narrow(&hidden, 1, 0, context - 2)?;
    mtp::forward_cached(&b, &model, 1, &ids(context - 2)?, &h, 0, &mut cache)?;
    let mut mtp_step = |n: usize| -> anyhow::Result<f64> {
        let (tokens, h) = (ids(n)?, b.narrow(&hidden, 1, context - 2, n)?);
        Ok(median(reps, || {
            mtp::forward_cached(&b, &model, 1, &tokens, &h, context - 2, &mut cache).expect("mtp");
        }))
    };
    let mtp_cost = [mtp_step(1)?, mtp_step(2)?];
    println!("decode cost at batch 1, {context} positions cached, median of {reps} ({source})");
    println!("threads: {}", rayon::current_num_threads());
    println!("| forward | ms | × one plain step |");
    println!("|---|---:|---:|");
    for (n, t) in main_cost.iter().enumerate() {
        println!("| main model, {} new position(s) | {:.3} | {:.2} |", n + 1, t * 1e3, t / main_cost[0]);
    }
    for (n, t) in mtp_cost.iter().enumerate() {
        println!("| MTP module 1, {} position(s) | {:.3} | {:.2} |", n + 1, t * 1e3, t / main_cost[0]);
    }
    println!("speed-up ceiling of depth-1 speculative decoding, (1 + a) · main(1) / (main(2) + mtp):");
    for a in [0.5, 0.85, 0.9, 1.0] {
        let mtp = (1.0 - a) * mtp_cost[0] + a * mtp_cost[1];
        println!("  acceptance {a:.2}: {:.2}×", (1.0 + a) * main_cost[0] / (main_cost[1] + mtp));
    }
    Ok(())
}
