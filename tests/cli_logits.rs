//! `v3lab logits` end to end on checkpoints it has never seen: the goldens rewritten in the
//! released layout (BF16, sharded, FP8 with 128×128 block scales), and every kind of bad
//! input, which must end in a clear error and never a panic.

mod common;

use common::*;
use ndarray::ArrayD;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The f32 forward against the goldens' float64 PyTorch forward.
const LOGITS_VS_PYTORCH: f64 = 1e-5;
/// Two loads of bit-identical weights (FP8 decoded by v3lab vs by the fixture): same
/// arithmetic, so only summation-order noise could differ.
const SAME_WEIGHTS: f64 = 1e-6;

fn rel(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let d: f64 = a.iter().zip(b.iter()).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (d / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()).sqrt()
}

struct Golden {
    config: serde_json::Value,
    weights: BTreeMap<String, ArrayD<f32>>,
    tokens: PathBuf,
    logits: ArrayD<f32>,
}

fn golden(name: &str, scratch: &Path) -> Golden {
    let dir = goldens().join(name);
    let config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let expected_bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let expected = safetensors::SafeTensors::deserialize(&expected_bytes).unwrap();
    let t = expected.tensor("tokens").unwrap();
    let tokens = scratch.join(format!("{name}-tokens.safetensors"));
    let values: Vec<i64> = t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    write_file(&tokens, &BTreeMap::from([("tokens".to_string(), i64_tensor(t.shape(), &values))]));
    let logits = read_all_f32(&dir.join("expected.safetensors")).remove("logits").unwrap();
    Golden { config, weights: read_all_f32(&dir.join("model.safetensors")), tokens, logits }
}

#[derive(Clone, Copy, PartialEq)]
enum Storage {
    Bf16,
    /// Projections in FP8 E4M3 with `weight_scale_inv` per 128×128 block; the rest BF16.
    Fp8,
}

/// Writes `g` in the released layout; returns the weights a correct loader must see.
fn write_released(g: &Golden, dir: &Path, storage: Storage, shards: usize) -> BTreeMap<String, ArrayD<f32>> {
    let mut config = released_config(&g.config);
    let (mut stored, mut effective) = (BTreeMap::new(), BTreeMap::new());
    for (name, w) in &g.weights {
        let name = to_released(name);
        if storage == Storage::Fp8 && name.ends_with("proj.weight") {
            let (bits, scales, dequant) = fp8_blocks(w, 128);
            stored.insert(
                name.clone(),
                Stored { dtype: safetensors::Dtype::F8_E4M3, shape: w.shape().to_vec(), bytes: bits },
            );
            stored.insert(name.replace(".weight", ".weight_scale_inv"), f32_tensor(&scales));
            effective.insert(name, dequant);
        } else {
            stored.insert(name.clone(), bf16_tensor(w));
            effective.insert(name, w.clone());
        }
    }
    if storage == Storage::Fp8 {
        config["quantization_config"] = serde_json::json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    write_weights(dir, &stored, shards);
    effective
}

fn logits(checkpoint: &Path, tokens: &Path, out: &Path) -> ArrayD<f32> {
    let (ok, _, stderr) = v3lab(&[
        "logits",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "v3lab logits failed: {stderr}");
    read_all_f32(out).remove("logits").expect("output holds `logits`")
}

#[test]
fn released_bf16_checkpoints_match_pytorch_sharded_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, shards) in [("official-v3-tiny", 3), ("official-v2lite-tiny", 1)] {
        let g = golden(name, tmp.path());
        let dir = tmp.path().join(format!("{name}-released"));
        write_released(&g, &dir, Storage::Bf16, shards);
        let got = logits(&dir, &g.tokens, &tmp.path().join(format!("{name}.out")));
        assert_eq!(got.shape(), g.logits.shape());
        let err = rel(&got, &g.logits);
        assert!(err <= LOGITS_VS_PYTORCH, "{name}: relative error {err:.3e}");
        // The public naming, straight from the goldens folder, gives the same logits.
        let public = logits(&goldens().join(name), &g.tokens, &tmp.path().join(format!("{name}-public.out")));
        assert!(rel(&public, &g.logits) <= LOGITS_VS_PYTORCH);
    }
}

#[test]
fn released_fp8_checkpoint_with_block_scales_loads_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden("official-v3-tiny", tmp.path());
    let fp8_dir = tmp.path().join("fp8");
    let effective = write_released(&g, &fp8_dir, Storage::Fp8, 2);
    // The same weights, decoded by the fixture, stored as F32.
    let f32_dir = tmp.path().join("f32");
    let mut config = released_config(&g.config);
    config["torch_dtype"] = serde_json::json!("float32");
    std::fs::create_dir_all(&f32_dir).unwrap();
    std::fs::write(f32_dir.join("config.json"), config.to_string()).unwrap();
    write_weights(&f32_dir, &effective.iter().map(|(n, w)| (n.clone(), f32_tensor(w))).collect(), 1);

    let from_fp8 = logits(&fp8_dir, &g.tokens, &tmp.path().join("fp8.out"));
    let from_f32 = logits(&f32_dir, &g.tokens, &tmp.path().join("f32.out"));
    let err = rel(&from_fp8, &from_f32);
    assert!(err <= SAME_WEIGHTS, "FP8 checkpoint vs its dequantised F32 copy: {err:.3e}");
    // FP8 weights really differ from BF16 ones: the model changed measurably, not hugely.
    let drift = rel(&from_fp8, &g.logits);
    assert!(drift > 1e-4 && drift < 0.5, "FP8 quantisation drift {drift:.3e}");
}

/// A released BF16 copy of v3-tiny to break in various ways.
fn scratch_checkpoint(tmp: &Path) -> (PathBuf, PathBuf) {
    let g = golden("official-v3-tiny", tmp);
    let dir = tmp.join("ckpt");
    write_released(&g, &dir, Storage::Bf16, 1);
    (dir, g.tokens)
}

fn run_logits(dir: &Path, tokens: &Path, out: &Path) -> Vec<String> {
    [
        "logits",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn expect_error(dir: &Path, tokens: &Path, needle: &str) {
    let out = dir.join("out.safetensors");
    let args = run_logits(dir, tokens, &out);
    assert_fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    assert!(!out.exists(), "nothing may be written on failure");
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Stored>)) {
    let path = dir.join("model.safetensors");
    let mut tensors: BTreeMap<String, Stored> =
        read_all_f32(&path).into_iter().map(|(n, w)| (n, bf16_tensor(&w))).collect();
    edit(&mut tensors);
    write_file(&path, &tensors);
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn bad_checkpoints_fail_with_a_message_that_names_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tokens) = scratch_checkpoint(tmp.path());
    let weights = dir.join("model.safetensors");
    let pristine = std::fs::read(&weights).unwrap();
    let config_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let restore = || {
        std::fs::write(&weights, &pristine).unwrap();
        std::fs::write(dir.join("config.json"), &config_text).unwrap();
    };

    std::fs::write(&weights, &pristine[..pristine.len() / 2]).unwrap();
    expect_error(&dir, &tokens, "model.safetensors");
    restore();

    edit_weights(&dir, |t| {
        t.remove("model.layers.2.mlp.experts.5.up_proj.weight");
    });
    expect_error(&dir, &tokens, "missing tensors: model.layers.2.mlp.experts.5.up_proj.weight");
    restore();

    edit_weights(&dir, |t| {
        let w = t.get_mut("model.layers.1.self_attn.kv_b_proj.weight").unwrap();
        w.shape = vec![w.shape[1], w.shape[0]];
    });
    expect_error(&dir, &tokens, "model.layers.1.self_attn.kv_b_proj.weight is [64, 256], expected [256, 64]");
    restore();

    edit_weights(&dir, |t| {
        t.insert("model.layers.9.mlp.gate.weight".into(), bf16_tensor(&ArrayD::zeros(ndarray::IxDyn(&[2, 2]))));
    });
    expect_error(
        &dir,
        &tokens,
        "unexpected tensors (not in the model config.json describes): model.layers.9.mlp.gate.weight",
    );
    restore();

    edit_weights(&dir, |t| {
        let w = t.get_mut("model.norm.weight").unwrap();
        w.bytes[0..2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    });
    expect_error(&dir, &tokens, "tensor `model.norm.weight`: non-finite value");
    restore();

    edit_config(&dir, |c| c["num_experts_per_tok"] = serde_json::json!(17));
    expect_error(&dir, &tokens, "config field `num_experts_per_tok`");
    restore();

    edit_config(&dir, |c| c["n_group"] = serde_json::json!(3));
    expect_error(&dir, &tokens, "config field `n_group`");
    restore();

    edit_config(&dir, |c| c["hidden_size"] = serde_json::json!("wide"));
    expect_error(&dir, &tokens, "config field `hidden_size`: expected a non-negative integer");
    restore();

    std::fs::write(dir.join("config.json"), "{ \"hidden_size\": 256,").unwrap();
    expect_error(&dir, &tokens, "config.json: malformed JSON");
    restore();

    std::fs::remove_file(&weights).unwrap();
    expect_error(&dir, &tokens, "no model.safetensors");
    restore();
}

#[test]
fn bad_tokens_fail_with_a_message_that_names_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = scratch_checkpoint(tmp.path());
    let write_tokens = |name: &str, tensor: &str, stored: Stored| {
        let path = tmp.path().join(name);
        write_file(&path, &BTreeMap::from([(tensor.to_string(), stored)]));
        path
    };
    let too_big = write_tokens("big.safetensors", "tokens", i64_tensor(&[1, 3], &[1, 512, 3]));
    expect_error(&dir, &too_big, "token id 512 at [0, 1] is outside the vocabulary (size 512)");
    let negative = write_tokens("neg.safetensors", "tokens", i64_tensor(&[1, 2], &[-1, 3]));
    expect_error(&dir, &negative, "token id -1 at [0, 0]");
    let flat = write_tokens("flat.safetensors", "tokens", i64_tensor(&[3], &[1, 2, 3]));
    expect_error(&dir, &flat, "tensor `tokens`: shape [3], expected [batch, positions]");
    let renamed = write_tokens("renamed.safetensors", "ids", i64_tensor(&[1, 2], &[1, 2]));
    expect_error(&dir, &renamed, "tensor `tokens`: missing");
    let floats = write_tokens("floats.safetensors", "tokens", f32_tensor(&ArrayD::zeros(ndarray::IxDyn(&[1, 2]))));
    expect_error(&dir, &floats, "tensor `tokens`: dtype F32, expected I64");
    let too_long = write_tokens("long.safetensors", "tokens", i64_tensor(&[1, 129], &[1; 129]));
    expect_error(&dir, &too_long, "129 positions exceed max_seq_len 128");
    expect_error(&dir, &tmp.path().join("absent.safetensors"), "absent.safetensors");
}
