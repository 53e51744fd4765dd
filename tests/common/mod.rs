//! Fixtures for the end-to-end tests: checkpoints in the released layout written with the
//! safetensors crate directly (not through v3lab's writer), an FP8 E4M3 block quantiser
//! written from the format's definition, and the goldens.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn goldens() -> PathBuf {
    std::env::var_os("V3LAB_GOLDENS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/goldens"))
}

/// Runs the `v3lab` binary; returns (success, stderr).
pub fn v3lab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_v3lab")).args(args).output().expect("run v3lab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a clean failure: non-zero exit, no panic, and a message containing `needle`.
pub fn assert_fails_with(args: &[&str], needle: &str) {
    let (ok, _, stderr) = v3lab(args);
    assert!(!ok, "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "panic instead of an error: {stderr}");
    assert!(stderr.contains(needle), "error should mention `{needle}`: {stderr}");
}

/// A tensor as stored: dtype, shape, bytes.
#[derive(Clone)]
pub struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn f32_tensor(a: &ArrayD<f32>) -> Stored {
    Stored { dtype: Dtype::F32, shape: a.shape().to_vec(), bytes: a.iter().flat_map(|v| v.to_le_bytes()).collect() }
}

pub fn bf16_tensor(a: &ArrayD<f32>) -> Stored {
    let bytes = a.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    Stored { dtype: Dtype::BF16, shape: a.shape().to_vec(), bytes }
}

pub fn i64_tensor(shape: &[usize], values: &[i64]) -> Stored {
    Stored { dtype: Dtype::I64, shape: shape.to_vec(), bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
}

/// Reads every float tensor of a safetensors file as f32 (F32/BF16/F64) with its name.
pub fn read_all_f32(path: &Path) -> BTreeMap<String, ArrayD<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .filter(|(_, v)| matches!(v.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F64))
        .map(|(name, v)| {
            let data: Vec<f32> = match v.dtype() {
                Dtype::F32 => v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::BF16 => {
                    v.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                Dtype::F64 => {
                    v.data().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
                }
                other => panic!("{name}: {other:?}"),
            };
            (name.to_string(), ArrayD::from_shape_vec(IxDyn(v.shape()), data).unwrap())
        })
        .collect()
}

pub fn write_file(path: &Path, tensors: &BTreeMap<String, Stored>) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap()))
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// Writes `tensors` into `dir` as one file or as `shards` files with an index.
pub fn write_weights(dir: &Path, tensors: &BTreeMap<String, Stored>, shards: usize) {
    std::fs::create_dir_all(dir).unwrap();
    if shards <= 1 {
        return write_file(&dir.join("model.safetensors"), tensors);
    }
    let names: Vec<&String> = tensors.keys().collect();
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(shards)).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        let part: BTreeMap<String, Stored> = chunk.iter().map(|n| ((*n).clone(), tensors[*n].clone())).collect();
        write_file(&dir.join(&file), &part);
        for n in chunk {
            weight_map.insert((*n).clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

/// E4M3 ("fn": bias 7, no infinities, S.1111.111 is NaN) from its definition.
pub fn e4m3_value(bits: u8) -> f32 {
    let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((bits >> 3) & 0xf, bits & 0x7);
    if e == 0xf && m == 0x7 {
        return f32::NAN;
    }
    sign * if e == 0 { m as f32 / 8.0 * 2f32.powi(-6) } else { (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7) }
}

/// Quantises `w [rows, cols]` to E4M3 with one scale per `block × block` (ragged edges
/// included): scale = amax/448, bits = the nearest E4M3 value. Returns (bits, scales, the
/// dequantised weight as the fixture's own expectation).
pub fn fp8_blocks(w: &ArrayD<f32>, block: usize) -> (Vec<u8>, ArrayD<f32>, ArrayD<f32>) {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    let (rb, cb) = (rows.div_ceil(block), cols.div_ceil(block));
    let mut scales = ArrayD::zeros(IxDyn(&[rb, cb]));
    for i in 0..rows {
        for j in 0..cols {
            let s = &mut scales[[i / block, j / block]];
            *s = f32::max(*s, w[[i, j]].abs() / 448.0);
        }
    }
    scales.mapv_inplace(|s: f32| if s == 0.0 { 1.0 } else { s });
    // Every finite E4M3 value, sorted, to find the nearest by bisection.
    let mut finite: Vec<(f32, u8)> =
        (0..=255u8).map(|b| (e4m3_value(b), b)).filter(|(v, b)| v.is_finite() && *b != 0x80).collect();
    finite.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bits = vec![0u8; rows * cols];
    let mut dequant = ArrayD::zeros(IxDyn(&[rows, cols]));
    for i in 0..rows {
        for j in 0..cols {
            let s = scales[[i / block, j / block]];
            let x = w[[i, j]] / s;
            let at = finite.partition_point(|(v, _)| *v < x);
            let nearest = [at.saturating_sub(1), at.min(finite.len() - 1)].map(|k| finite[k]);
            let best = nearest.into_iter().min_by(|a, b| (a.0 - x).abs().total_cmp(&(b.0 - x).abs())).unwrap().1;
            bits[i * cols + j] = best;
            dequant[[i, j]] = e4m3_value(best) * s;
        }
    }
    (bits, scales, dequant)
}

/// The public-code name of a golden tensor in the released naming (test-local table,
/// written from the public `convert.py`, independent of v3lab's).
pub fn to_released(name: &str) -> String {
    let mut n = name.to_string();
    for (from, to) in [
        (".attn_norm.", ".input_layernorm."),
        (".ffn_norm.", ".post_attention_layernorm."),
        (".attn.wq_a.", ".self_attn.q_a_proj."),
        (".attn.q_norm.", ".self_attn.q_a_layernorm."),
        (".attn.wq_b.", ".self_attn.q_b_proj."),
        (".attn.wq.", ".self_attn.q_proj."),
        (".attn.wkv_a.", ".self_attn.kv_a_proj_with_mqa."),
        (".attn.kv_norm.", ".self_attn.kv_a_layernorm."),
        (".attn.wkv_b.", ".self_attn.kv_b_proj."),
        (".attn.wo.", ".self_attn.o_proj."),
        (".ffn.gate.bias", ".mlp.gate.e_score_correction_bias"),
        (".ffn.", ".mlp."),
        (".w1.", ".gate_proj."),
        (".w2.", ".down_proj."),
        (".w3.", ".up_proj."),
    ] {
        n = n.replace(from, to);
    }
    match n.as_str() {
        "embed.weight" => "model.embed_tokens.weight".into(),
        "head.weight" => "lm_head.weight".into(),
        _ => format!("model.{n}"),
    }
}

/// The goldens' public-code `ModelArgs` rewritten as a released `config.json` (test-local).
pub fn released_config(args: &serde_json::Value) -> serde_json::Value {
    let a = |k: &str| args[k].clone();
    let yarn = args["max_seq_len"].as_u64() > args["original_seq_len"].as_u64();
    serde_json::json!({
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": a("vocab_size"), "hidden_size": a("dim"), "intermediate_size": a("inter_dim"),
        "moe_intermediate_size": a("moe_inter_dim"), "num_hidden_layers": a("n_layers"),
        "num_nextn_predict_layers": 0, "num_attention_heads": a("n_heads"), "num_key_value_heads": a("n_heads"),
        "n_shared_experts": a("n_shared_experts"), "n_routed_experts": a("n_routed_experts"),
        "routed_scaling_factor": a("route_scale"), "kv_lora_rank": a("kv_lora_rank"),
        "q_lora_rank": if args["q_lora_rank"] == 0 { serde_json::Value::Null } else { a("q_lora_rank") },
        "qk_rope_head_dim": a("qk_rope_head_dim"), "v_head_dim": a("v_head_dim"), "qk_nope_head_dim": a("qk_nope_head_dim"),
        "n_group": a("n_expert_groups"), "topk_group": a("n_limited_groups"), "num_experts_per_tok": a("n_activated_experts"),
        "first_k_dense_replace": a("n_dense_layers"), "moe_layer_freq": 1,
        "norm_topk_prob": args["score_func"] == "sigmoid", "scoring_func": a("score_func"),
        "topk_method": if args["score_func"] == "sigmoid" { "noaux_tc" } else { "greedy" },
        "hidden_act": "silu", "max_position_embeddings": a("max_seq_len"), "rms_norm_eps": 1e-6, "rope_theta": a("rope_theta"),
        "rope_scaling": if yarn { serde_json::json!({"type": "yarn", "factor": a("rope_factor"),
            "original_max_position_embeddings": a("original_seq_len"), "beta_fast": a("beta_fast"), "beta_slow": a("beta_slow"),
            "mscale": a("mscale"), "mscale_all_dim": a("mscale")}) } else { serde_json::Value::Null },
        "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    })
}

/// A from-scratch run of `v3lab train` on a tiny text corpus: a model folder holding only a
/// `ModelArgs` config (vocabulary 260 for the byte tokenizer, one MTP module), the corpus
/// (`.jsonl`) and a 4-step `train.json`.
pub struct TinyCorpusRun {
    pub model: PathBuf,
    pub config: serde_json::Value,
    pub corpus: PathBuf,
    pub train: PathBuf,
}

pub fn tiny_corpus_run(dir: &Path) -> TinyCorpusRun {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let config = serde_json::json!({
        "vocab_size": 260, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 2, "n_dense_layers": 1,
        "n_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1, "n_activated_experts": 2,
        "score_func": "sigmoid", "route_scale": 2.5, "q_lora_rank": 8, "kv_lora_rank": 8,
        "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "max_seq_len": 16, "n_mtp_layers": 1
    });
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let corpus = dir.join("corpus.jsonl");
    let docs: Vec<String> = (0..10)
        .map(|i| serde_json::json!({"text": format!("doc {i}: {}", "abc ".repeat(i + 3))}).to_string())
        .collect();
    std::fs::write(&corpus, docs.join("\n")).unwrap();
    let train = dir.join("train.json");
    std::fs::write(
        &train,
        r#"{"steps": 4, "lr": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
            "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
            "balance": {"bias_gamma": 0.01, "aux": "batch", "aux_alpha": 0.001},
            "schedule": {"kind": "deepseek_v3", "warmup_steps": 1, "total_steps": 4},
            "data": {"seq_len": 16, "batch_size": 2, "fim_rate": 0.1, "val_fraction": 0.2, "seed": 3},
            "eval_every": 2}"#,
    )
    .unwrap();
    TinyCorpusRun { model, config, corpus, train }
}
