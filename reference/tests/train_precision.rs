//! Training in reduced precision (DeepSeek-V3 §3.3): `train.json`'s `precision` reaches
//! every linear layer the paper runs in FP8 and changes the run by about what the format's
//! rounding allows, in the order f32 < bf16 < fp8; each FP8 option changes the run and trains; a checkpoint
//! cannot be resumed in another precision.

mod common;

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use v3lab_reference::train::init::init_params;
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{CpuBackend, Transformer};

const VOCAB: usize = 64;

fn train_json(steps: usize, precision: &str) -> TrainConfig {
    TrainConfig::from_json_str(&format!(
        r#"{{"steps": {steps}, "lr": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
        "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
        "balance": {{"bias_gamma": 0.05, "aux": "sequence", "aux_alpha": 0.01}}, {precision}}}"#
    ))
    .unwrap()
}

fn tokens() -> Array2<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    Array2::from_shape_fn((4, 16), |_| rng.random_range(0..VOCAB as i64))
}

/// The losses (`total`) of `steps` steps from the same weights on the same batch.
fn losses(steps: usize, precision: &str) -> Vec<f32> {
    let b = CpuBackend::default();
    let model_cfg = common::tiny_train_config(VOCAB);
    let model = Transformer::new(&b, model_cfg.clone(), &init_params(&model_cfg, 0.05, 9).unwrap()).unwrap();
    let mut t = Trainer::new(&b, model, train_json(steps, precision), Batches::Fixed(tokens())).unwrap();
    (0..steps).map(|_| t.train_step().unwrap().total).collect()
}

#[test]
fn each_precision_moves_the_losses_by_its_rounding() {
    let steps = 4;
    let f32_run = losses(steps, r#""precision": "f32""#);
    let bf16_run = losses(steps, r#""precision": "bf16""#);
    let fp8_run = losses(steps, r#""precision": "fp8""#);
    let gap = |run: &[f32]| run.iter().zip(&f32_run).map(|(a, b)| ((a - b) / b).abs()).fold(0.0, f32::max);
    let (bf16_gap, fp8_gap) = (gap(&bf16_run), gap(&fp8_run));
    println!(
        "f32 {f32_run:?}\nbf16 {bf16_run:?} (max rel gap {bf16_gap:.2e})\nfp8 {fp8_run:?} (max rel gap {fp8_gap:.2e})"
    );
    // The precision reached the GEMMs: the runs differ from f32 …
    assert!(bf16_gap > 0.0 && fp8_gap > 0.0, "bf16 {bf16_gap}, fp8 {fp8_gap}");
    // … by no more than their unit roundoffs allow a few-step loss to drift (BF16 keeps 8
    // bits, u = 2⁻⁸ ≈ 3.9e-3; E4M3 keeps 4, u = 2⁻⁴), and FP8 by more than BF16.
    assert!(bf16_gap < 4e-3, "bf16 moved the loss by {bf16_gap}");
    assert!(fp8_gap < 6e-2, "fp8 moved the loss by {fp8_gap}");
    assert!(fp8_gap > bf16_gap, "fp8 {fp8_gap} vs bf16 {bf16_gap}");
    // The loss still falls on a repeated batch.
    for run in [&bf16_run, &fp8_run] {
        assert!(run[steps - 1] < run[0], "{run:?}");
    }
}

#[test]
fn every_fp8_option_trains() {
    let base = losses(2, r#""precision": "fp8""#);
    for options in [
        r#""accumulator": "h100-promote-128""#,
        r#""accumulator": "h100", "scaling": "tensor""#,
        r#""scaling": "block""#,
        r#""gradient_blocks": true"#,
        r#""attention_output_e5m6": false"#,
    ] {
        let run = losses(2, &format!(r#""precision": "fp8", "fp8": {{{options}}}"#));
        assert!(run.iter().all(|l| l.is_finite()), "{options}: {run:?}");
        // The option reached the GEMMs (the forward, or for gradient blocks the backward).
        assert_ne!(run, base, "{options} changed nothing");
        assert!((run[0] - base[0]).abs() / base[0] < 6e-2, "{options}: {run:?} vs the recipe {base:?}");
        println!("{options}: {run:?} (recipe {base:?})");
    }
}

#[test]
fn resume_refuses_another_precision() {
    let b = CpuBackend::default();
    let tmp = tempfile::tempdir().unwrap();
    let model_cfg = common::tiny_train_config(VOCAB);
    let model = Transformer::new(&b, model_cfg.clone(), &init_params(&model_cfg, 0.05, 9).unwrap()).unwrap();
    let cfg = train_json(2, r#""precision": "fp8""#);
    Trainer::new(&b, model, cfg, Batches::Fixed(tokens())).unwrap().run(tmp.path(), |_| {}).unwrap();
    let ckpt = tmp.path().join("checkpoints/step-000002");
    let bf16 = train_json(4, r#""precision": "bf16""#);
    let e = Trainer::resume(&b, &ckpt, bf16, Batches::Fixed(tokens())).err().expect("refused").to_string();
    assert!(e.contains("differs"), "{e}");
    assert!(Trainer::resume(&b, &ckpt, train_json(4, r#""precision": "fp8""#), Batches::Fixed(tokens())).is_ok());
}
