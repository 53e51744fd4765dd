//! `v3lab train` end to end on the train-v3-tiny goldens: the five-step history in
//! metrics.jsonl and the weights after five steps against PyTorch, the output files, an
//! interrupted-and-resumed run equal byte for byte to the uninterrupted one, and clear
//! errors for bad input.

mod common;

use assert_cmd::Command;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use v3lab::data::tokenizer::{BpeTokenizer, ByteTokenizer, Special, Tokenizer};

/// Loss terms of the CLI's f32 run against the f64 PyTorch history.
const HISTORY_VS_PYTORCH: f64 = 1e-5;
/// Weights after five steps (f32 AdamW against f64), relative per tensor.
const WEIGHTS_VS_PYTORCH: f64 = 1e-4;

fn golden() -> PathBuf {
    let root = std::env::var_os("V3LAB_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/goldens"));
    root.join("train-v3-tiny")
}

fn f64s(file: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = file.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"));
    t.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn f32s(file: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = file.tensor(name).unwrap_or_else(|_| panic!("output tensor {name}"));
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
}

fn rel(out: &[f64], reference: &[f64]) -> f64 {
    let num: f64 = out.iter().zip(reference).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = reference.iter().map(|b| b * b).sum();
    (num / den.max(1e-300)).sqrt()
}

fn train(out: &Path, config: &Path, checkpoint: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    let g = golden();
    Command::cargo_bin("v3lab")
        .unwrap()
        .arg("train")
        .arg("--checkpoint")
        .arg(checkpoint)
        .arg("--tokens")
        .arg(g.join("expected.safetensors"))
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra)
        .assert()
}

#[test]
fn five_steps_match_pytorch() {
    five_steps_on(&[]);
}

/// The same run with `--backend cuda`, held to the same bounds (skipped without a device).
#[test]
fn five_steps_match_pytorch_cuda() {
    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
    drop(b);
    five_steps_on(&["--backend", "cuda"]);
}

/// Without a device, `--backend cuda` is a clear error, not a panic or a CPU run.
#[test]
fn backend_cuda_without_a_device_fails_clearly() {
    if v3lab_gpu::CudaBackend::new().is_ok() {
        println!("skipped: a CUDA device is present (five_steps_match_pytorch_cuda trains on it)");
        return;
    }
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let out = train(&tmp.path().join("o"), &g.join("train.json"), &g, &["--backend", "cuda"]).failure();
    let msg = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(msg.contains("--backend cuda") && !msg.contains("panicked"), "{msg}");
    assert!(!tmp.path().join("o").join("metrics.jsonl").exists(), "nothing is written without a device");
}

fn five_steps_on(extra: &[&str]) {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    train(&out, &g.join("train.json"), &g, extra).success();

    let bytes = std::fs::read(g.join("expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&bytes).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for key in ["total", "main", "mtp", "aux", "grad_norm"] {
        let got: Vec<f64> = lines.iter().map(|l| l[key].as_f64().unwrap()).collect();
        let want = f64s(&expected, &format!("history.{key}"));
        let err = rel(&got, &want);
        assert!(err <= HISTORY_VS_PYTORCH, "history.{key}: rel err {err:.2e}\n got {got:?}\nwant {want:?}");
    }
    assert_eq!(lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);

    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let model = SafeTensors::deserialize(&model).unwrap();
    let mut checked = 0;
    for name in expected.names() {
        let Some(param) = name.strip_prefix("after5.") else { continue };
        let err = rel(&f32s(&model, param), &f64s(&expected, name));
        assert!(err <= WEIGHTS_VS_PYTORCH, "{param} after 5 steps: rel err {err:.2e}");
        checked += 1;
    }
    assert!(checked > 20 && model.names().iter().any(|n| n.starts_with("model.layers.3.eh_proj")));
    assert_eq!(checked, model.names().len(), "every saved tensor has a golden, and back");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_nextn_predict_layers"], 1);
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let with_steps = |n: usize| {
        let text = std::fs::read_to_string(g.join("train.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["steps"] = n.into();
        let path = tmp.path().join(format!("train{n}.json"));
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let (straight, first, second) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    train(&straight, &with_steps(4), &g, &[]).success();
    train(&first, &with_steps(2), &g, &[]).success();
    train(&second, &with_steps(4), &first.join("checkpoints/step-000002"), &["--resume"]).success();
    for file in ["model.safetensors", "metrics.jsonl", "checkpoints/step-000004/optimizer.safetensors"] {
        assert!(
            std::fs::read(straight.join(file)).unwrap() == std::fs::read(second.join(file)).unwrap(),
            "{file} differs between the uninterrupted and the resumed run"
        );
    }
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    let text = std::fs::read_to_string(g.join("train.json")).unwrap();
    std::fs::write(&bad, text.replace("\"aux_alpha\": 0.01", "\"aux_alpha\": \"lots\"")).unwrap();
    let out = train(&tmp.path().join("o"), &bad, &g, &[]).failure().get_output().stderr.clone();
    let msg = String::from_utf8_lossy(&out);
    assert!(msg.contains("bad.json") && msg.contains("balance.aux_alpha"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");

    std::fs::write(&bad, "{\"steps\": 5,").unwrap();
    let out = train(&tmp.path().join("o"), &bad, &g, &[]).failure().get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&out).contains("bad.json"));

    // Tokens beyond the vocabulary (256): named with the file and the position.
    let tokens = tmp.path().join("tokens.safetensors");
    let ids: Vec<u8> = [1i64, 2, 300, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 4], &ids).unwrap();
    std::fs::write(&tokens, safetensors::serialize([("tokens", view)], None).unwrap()).unwrap();
    let out = Command::cargo_bin("v3lab")
        .unwrap()
        .args(["train", "--quiet", "--checkpoint"])
        .arg(&g)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--config")
        .arg(g.join("train.json"))
        .arg("--out")
        .arg(tmp.path().join("o"))
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let msg = String::from_utf8_lossy(&out);
    assert!(msg.contains("tokens.safetensors") && msg.contains("300") && msg.contains("[0, 2]"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
}

#[test]
fn trains_from_scratch_on_a_text_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let common::TinyCorpusRun { model, config, corpus, train } = common::tiny_corpus_run(tmp.path());
    let out = tmp.path().join("out");
    // The same run of `v3lab train` from scratch on the corpus, before and after the config edit.
    let train_from_scratch = || {
        Command::cargo_bin("v3lab")
            .unwrap()
            .args(["train", "--quiet", "--init-seed", "7", "--checkpoint"])
            .arg(&model)
            .arg("--corpus")
            .arg(&corpus)
            .arg("--config")
            .arg(&train)
            .arg("--out")
            .arg(&out)
            .assert()
    };
    train_from_scratch().success();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[1]["val_loss"].as_f64().unwrap() > 0.0 && lines[3]["val_max_vio"].is_number());
    // The tokenizer that read the corpus is written beside the model, as transformers reads it.
    let tokenizer = BpeTokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    let text = "doc 3: héllo ✓\n";
    assert_eq!(tokenizer.encode(text).unwrap(), ByteTokenizer.encode(text).unwrap());
    let tokenizer_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tokenizer_config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(tokenizer_config["eos_token"], Special::EndOfDocument.text());
    // A vocabulary too small for the byte tokenizer's special tokens is refused up front.
    let small =
        config.as_object().unwrap().clone().into_iter().map(
            |(k, v)| {
                if k == "vocab_size" {
                    (k, 256.into())
                } else {
                    (k, v)
                }
            },
        );
    std::fs::write(model.join("config.json"), serde_json::Value::Object(small.collect()).to_string()).unwrap();
    let err = train_from_scratch().failure().get_output().stderr.clone();
    let msg = String::from_utf8_lossy(&err);
    assert!(msg.contains("vocabulary") && msg.contains("256"), "{msg}");
}
