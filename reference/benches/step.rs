//! Criterion benchmarks of the whole: one training step (forward, backward, clipping,
//! AdamW, the selection-bias update) of `configs/compare-cpu` (ablation-small without MTP,
//! 4 expert groups keep 2: the model `benches/compare-cpu.sh` trains in transformers too)
//! on 8 × 256 random tokens, and one decoding step at batch 1 (128 positions cached, the
//! absorbed latent cache, logits included).
//!
//! `cargo bench -p v3lab-reference --bench step`; criterion's "elem/s" is tokens/s.
//! `V3LAB_BENCH_CONFIG` (a folder with `config.json` and `train.json`) swaps the model.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::Duration;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::train::init::{init_params, INIT_STD};
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{AttentionImpl, CpuBackend, Decoder, ModelConfig, Transformer};

const CONTEXT: usize = 128;

fn configs() -> (ModelConfig, TrainConfig) {
    let dir = std::env::var_os("V3LAB_BENCH_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/compare-cpu"));
    let model = ModelConfig::from_file(&dir.join("config.json")).expect("config.json");
    let mut train = TrainConfig::from_file(&dir.join("train.json")).expect("train.json");
    train.eval_every = 0;
    train.steps = usize::MAX / 2;
    (model, train)
}

fn train_step(c: &mut Criterion) {
    let (model_cfg, cfg) = configs();
    let (batch, seq) = (cfg.data.batch_size, cfg.data.seq_len);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let tokens = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..model_cfg.vocab_size as i64));
    let b = CpuBackend;
    let model = Transformer::new(&b, model_cfg.clone(), &init_params(&model_cfg, INIT_STD, 0).unwrap()).unwrap();
    let mut trainer = Trainer::new(&b, model, cfg, Batches::Fixed(tokens)).unwrap();
    let mut group = c.benchmark_group("train_step");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((batch * seq) as u64));
    group.bench_function(format!("{batch}x{seq} tokens"), |bench| bench.iter(|| trainer.train_step().unwrap()));
    group.finish();
}

fn decode(c: &mut Criterion) {
    let (cfg, _) = configs();
    let b = CpuBackend;
    let model = Transformer::new(&b, cfg.clone(), &init_params(&cfg, INIT_STD, 0).unwrap()).unwrap();
    let ids = |n: usize| {
        let t = Array2::from_shape_fn((1, n), |(_, i)| (i * 7 % cfg.vocab_size) as i64);
        b.upload_indices(t.into_dyn().view()).unwrap()
    };
    let mut decoder = Decoder::new(&b, &model, AttentionImpl::Absorbed, 1, CONTEXT + 1).unwrap();
    decoder.step(&b, &ids(CONTEXT)).unwrap();
    let next = ids(1);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("batch 1, {CONTEXT} cached"), |bench| {
        bench.iter(|| {
            let logits = decoder.step(&b, &next).unwrap();
            decoder.truncate(CONTEXT);
            logits
        })
    });
    group.finish();
}

criterion_group! {
    name = steps;
    // No plots: criterion's need system fonts, which a bare machine lacks.
    config = { v3lab_reference::backend::tune_allocator(); Criterion::default().without_plots() };
    targets = train_step, decode
}
criterion_main!(steps);
