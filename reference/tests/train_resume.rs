//! The training loop: a run stopped at a checkpoint and resumed ends bit for bit where the
//! uninterrupted run ends (weights, selection biases, AdamW moments, metrics), on a packed
//! corpus with FIM, shuffling, batch-size warm-up and validation; NaN is reported with the
//! step and the tensor.

mod common;

use ndarray::ArrayD;
use std::path::Path;
use v3lab_reference::data::{Corpus, DataPosition, Loader};
use v3lab_reference::model::config::ModelConfig;
use v3lab_reference::model::params::{ParamKind, Params};
use v3lab_reference::train::init::init_params;
use v3lab_reference::train::state::load_run;
use v3lab_reference::train::trainer::Batches;
use v3lab_reference::train::{TrainConfig, Trainer};
use v3lab_reference::{CpuBackend, Transformer};

fn tiny_model() -> ModelConfig {
    common::tiny_train_config(260)
}

fn train_config(steps: usize) -> TrainConfig {
    TrainConfig::from_json_str(&format!(
        r#"{{"steps": {steps}, "lr": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
        "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
        "balance": {{"bias_gamma": 0.05, "aux": "sequence", "aux_alpha": 0.01}},
        "schedule": {{"kind": "cosine", "warmup_steps": 2, "decay_steps": 6, "min_ratio": 0.1}},
        "data": {{"seq_len": 12, "batch_size": 3, "batch_warmup": {{"start": 1, "tokens": 60}},
                 "fim_rate": 0.5, "val_fraction": 0.25, "seed": 11}},
        "eval_every": 2, "checkpoint_every": 3}}"#
    ))
    .unwrap()
}

fn corpus(dir: &Path, cfg: &TrainConfig) -> Batches {
    let text: Vec<String> = (0..12)
        .map(|i| format!("document {i}: the quick brown fox {} jumps over the lazy dog {}", i * 7, "z".repeat(i)))
        .collect();
    corpus_of(dir, cfg, &text)
}

/// Batches over `docs` written as a blank-line separated corpus in `dir`.
fn corpus_of(dir: &Path, cfg: &TrainConfig, docs: &[String]) -> Batches {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, docs.join("\n\n")).unwrap();
    let corpus = Corpus::build(&path, &v3lab_reference::data::ByteTokenizer, &cfg.data).unwrap();
    let pos = DataPosition { seed: cfg.data.seed, ..Default::default() };
    Batches::Corpus { loader: Loader::new(corpus.train, corpus.seq_len, pos).unwrap(), val: corpus.val }
}

fn bits(p: &Params<ArrayD<f32>>) -> Vec<(String, Vec<u32>)> {
    p.leaves().into_iter().map(|(n, _, t)| (n, t.iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn resumed_run_matches_the_uninterrupted_run_bit_for_bit() {
    let b = CpuBackend::default();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = train_config(7);
    let init = init_params(&tiny_model(), 0.05, 5).unwrap();

    let straight_out = tmp.path().join("straight");
    let model = Transformer::new(&b, tiny_model(), &init).unwrap();
    let mut straight = Trainer::new(&b, model, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap();
    straight.run(&straight_out, |_| {}).unwrap();

    // Stop after 3 steps (a checkpoint is due then), start a new process-like trainer from it.
    let first_out = tmp.path().join("first");
    let model = Transformer::new(&b, tiny_model(), &init).unwrap();
    let mut first = Trainer::new(&b, model, train_config(3), corpus(tmp.path(), &cfg)).unwrap();
    first.run(&first_out, |_| {}).unwrap();
    drop(first);
    let ckpt = first_out.join("checkpoints/step-000003");
    let second_out = tmp.path().join("second");
    let mut resumed = Trainer::resume(&b, &ckpt, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap();
    assert_eq!(resumed.step, 3);
    resumed.run(&second_out, |_| {}).unwrap();

    let a = load_run(&straight_out.join("checkpoints/step-000007")).unwrap();
    let r = load_run(&second_out.join("checkpoints/step-000007")).unwrap();
    assert_eq!(bits(&a.params), bits(&r.params), "weights (selection biases included)");
    let biases: Vec<_> = a.params.leaves().into_iter().filter(|(_, k, _)| *k == ParamKind::SelectionBias).collect();
    assert!(biases.len() == 2 && biases.iter().all(|(_, _, t)| t.iter().any(|&x| x != 0.0)), "biases moved");
    for (x, y) in a.optimizer.moments.iter().zip(&r.optimizer.moments) {
        assert_eq!(x.name, y.name);
        assert!(x.m.iter().zip(&y.m).all(|(p, q)| p.to_bits() == q.to_bits()), "exp_avg of {}", x.name);
        assert!(x.v.iter().zip(&y.v).all(|(p, q)| p.to_bits() == q.to_bits()), "exp_avg_sq of {}", x.name);
    }
    assert_eq!(a.state, r.state, "step, AdamW count, data position");
    assert_eq!(a.metrics, r.metrics, "metrics.jsonl in the checkpoints");
    let file = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    assert_eq!(file(&straight_out), file(&second_out), "metrics.jsonl in --out");
    assert_eq!(a.metrics.len(), 7);

    // The run did what the config says: warm-up of the batch, validation every 2 steps,
    // the loss fell, the data moved on.
    let m: Vec<serde_json::Value> = a.metrics.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(m[0]["batch"], 1);
    assert_eq!(m[6]["batch"], 3);
    assert!(m[1]["val_loss"].is_number() && m[0].get("val_loss").is_none() && m[5]["val_loss"].is_number());
    assert!(m[5]["val_max_vio"].is_number() && m[6].get("val_loss").is_none());
    for key in ["step", "total", "main", "mtp", "aux", "grad_norm", "lr", "max_vio_batch"] {
        assert!(m.iter().all(|x| x[key].is_number()), "{key}");
    }
    assert!(a.state.data.unwrap().tokens_seen > 0);
    // Released names, MTP layer included, in the final model.
    let saved = v3lab_reference::checkpoint::load(&straight_out).unwrap();
    assert_eq!(bits(&saved.params), bits(&a.params));
    assert!(saved.params.leaves().iter().any(|(n, _, _)| n == "model.layers.2.eh_proj.weight"));
}

#[test]
fn resume_refuses_a_changed_config() {
    let b = CpuBackend::default();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = train_config(3);
    let model = Transformer::new(&b, tiny_model(), &init_params(&tiny_model(), 0.05, 5).unwrap()).unwrap();
    Trainer::new(&b, model, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap().run(tmp.path(), |_| {}).unwrap();
    let changed = TrainConfig { lr: 0.02, ..train_config(5) };
    let e = Trainer::resume(&b, &tmp.path().join("checkpoints/step-000003"), changed, corpus(tmp.path(), &cfg));
    assert!(e.err().unwrap().to_string().contains("differs"));
}

#[test]
fn nan_is_reported_with_step_and_tensor() {
    let b = CpuBackend::default();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = train_config(3);
    let bad = "model.layers.1.self_attn.o_proj.weight";
    let init = init_params(&tiny_model(), 0.05, 5)
        .unwrap()
        .try_map(|name, _, t| {
            let mut t = t.clone();
            if name == bad {
                t[[3, 1]] = f32::NAN;
            }
            Ok::<_, ()>(t)
        })
        .unwrap();
    let model = Transformer::new(&b, tiny_model(), &init).unwrap();
    let mut trainer = Trainer::new(&b, model, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap();
    let e = trainer.train_step().unwrap_err().to_string();
    assert!(e.contains("step 0") && e.contains(bad) && e.contains("NaN"), "{e}");
    // Through `run`, the failed first step leaves no (empty) metrics.jsonl behind.
    let model = Transformer::new(&b, tiny_model(), &init).unwrap();
    let out = tmp.path().join("out");
    let e = Trainer::new(&b, model, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap().run(&out, |_| {}).unwrap_err();
    assert!(e.to_string().contains("step 0"), "{e}");
    assert!(!out.join("metrics.jsonl").exists(), "a run that failed at step 0 left metrics.jsonl");
}

/// The fingerprints in trainer_state.json: a resume with another corpus, fewer steps, or an
/// edited config.json is refused; format-1 checkpoints (without them) still resume.
#[test]
fn resume_refuses_other_data_lowered_steps_and_an_edited_model() {
    let b = CpuBackend::default();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = train_config(3);
    let model = Transformer::new(&b, tiny_model(), &init_params(&tiny_model(), 0.05, 5).unwrap()).unwrap();
    Trainer::new(&b, model, cfg.clone(), corpus(tmp.path(), &cfg)).unwrap().run(tmp.path(), |_| {}).unwrap();
    let ckpt = tmp.path().join("checkpoints/step-000003");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_text: Vec<String> =
        (0..12).map(|i| format!("another document {i} about {}", "y".repeat(i + 20))).collect();
    let batches = corpus_of(&other, &cfg, &other_text);
    let e = Trainer::resume(&b, &ckpt, train_config(5), batches).err().unwrap().to_string();
    assert!(e.contains("fingerprints differ"), "{e}");
    let e = Trainer::resume(&b, &ckpt, train_config(2), corpus(tmp.path(), &cfg)).err().unwrap().to_string();
    assert!(e.contains("`steps`") && e.contains("below"), "{e}");
    assert!(Trainer::resume(&b, &ckpt, train_config(5), corpus(tmp.path(), &cfg)).is_ok());
    // Format 1 (no fingerprints) still loads.
    let state_path = ckpt.join("trainer_state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("fingerprint");
    state["format"] = 1.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    assert!(Trainer::resume(&b, &ckpt, train_config(5), corpus(tmp.path(), &cfg)).is_ok());
}
