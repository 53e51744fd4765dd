//! The released checkpoints' `config.json`, read as transformers reads it.
//!
//! - Rotary settings come from `rope_parameters` (transformers 5.x) or `rope_scaling`
//!   (the released checkpoints, transformers 4.x), every field; both present and
//!   disagreeing is an error naming the field. `rope_theta` may sit inside or beside them.
//! - YaRN applies whenever it is declared (`rope_type: yarn`), even where
//!   `max_position_embeddings` equals `original_max_position_embeddings` (the public code's
//!   `ModelArgs` would not apply it: that layout keeps the public code's rule). The rotary
//!   amplitude is transformers' `attention_factor` (given, or `m(s, mscale) /
//!   m(s, mscale_all_dim)` when both are set, else `m(s, 1)`), and the softmax scale is
//!   multiplied by `m(s, mscale_all_dim)²` (transformers' `yarn_apply_mscale`).
//! - `num_key_value_heads` is accepted and ignored, as transformers does for MLA.
//! - Every key is in [`READ_KEYS`] or [`IGNORED_KEYS`]; any other is reported as a note,
//!   and values that would change the computation in ways v3lab does not implement
//!   (`attention_bias: true`, `rope_interleave: false`, `partial_rotary_factor` ≠ 1, ...)
//!   are refused.

use super::{yarn_mscale, Fields, Fp8Quantization, ModelConfig, YarnConfig};
use crate::backend::ScoreFunc;
use crate::error::Result;
use serde_json::{json, Map, Value};

/// Keys of `config.json` that change the model and that v3lab reads.
pub const READ_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "first_k_dense_replace",
    "moe_layer_freq",
    "num_attention_heads",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "n_group",
    "topk_group",
    "scoring_func",
    "routed_scaling_factor",
    "norm_topk_prob",
    "topk_method",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "qk_head_dim",
    "head_dim",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_interleave",
    "partial_rotary_factor",
    "rms_norm_eps",
    "num_nextn_predict_layers",
    "tie_word_embeddings",
    "quantization_config",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
];

/// Keys v3lab knowingly ignores, with the reason.
pub const IGNORED_KEYS: &[(&str, &str)] = &[
    ("num_key_value_heads", "MLA has no key/value heads to group (transformers ignores it too)"),
    ("architectures", "always DeepseekV3ForCausalLM"),
    ("model_type", "always deepseek_v3"),
    ("auto_map", "remote-code class names"),
    ("transformers_version", "provenance"),
    ("torch_dtype", "storage dtype, read from the safetensors headers"),
    ("dtype", "storage dtype, read from the safetensors headers"),
    ("initializer_range", "initialisation is train.json's"),
    ("use_cache", "decoding always caches"),
    ("bos_token_id", "generation reads it (generation_config.json first)"),
    ("eos_token_id", "generation reads it (generation_config.json first)"),
    ("pad_token_id", "no padding in v3lab's batches"),
    ("pretraining_tp", "a tensor-parallel slicing of the same product"),
    ("attention_dropout", "no dropout in v3lab"),
    ("output_router_logits", "an output option"),
    ("router_aux_loss_coef", "the balance loss is train.json's"),
    ("aux_loss_alpha", "the balance loss is train.json's"),
    ("seq_aux", "the balance loss is train.json's"),
    ("ep_size", "expert-parallel degree of the original deployment"),
    ("_name_or_path", "provenance"),
    ("name_or_path", "provenance"),
];

/// Fields of a rotary parameter object (`rope_parameters` or `rope_scaling`).
const ROPE_FIELDS: &[&str] = &[
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "attention_factor",
    "truncate",
    "partial_rotary_factor",
];

/// The one rotary object of the file: `rope_parameters`, `rope_scaling`, or both when they
/// agree on every field (`type` and `rope_type` are one field).
fn rope_object<'a>(f: &'a Fields) -> Result<Option<(&'a Map<String, Value>, &'static str)>> {
    let mut found = Vec::new();
    for key in ["rope_parameters", "rope_scaling"] {
        if let Some(v) = f.get(key) {
            let obj = v.as_object().ok_or_else(|| f.err(key, "expected an object or null"))?;
            if let Some(unknown) = obj.keys().find(|k| !ROPE_FIELDS.contains(&k.as_str())) {
                return Err(f.err(&format!("{key}.{unknown}"), "unknown rotary parameter (v3lab would ignore it)"));
            }
            found.push((obj, key));
        }
    }
    if let [(a, _), (b, _)] = found[..] {
        let field = |o: &Map<String, Value>, k: &str| -> Option<Value> {
            let v = if k == "rope_type" { o.get("rope_type").or_else(|| o.get("type")) } else { o.get(k) };
            v.filter(|v| !v.is_null()).cloned()
        };
        for k in ROPE_FIELDS.iter().filter(|k| **k != "type") {
            let (x, y) = (field(a, k), field(b, k));
            let same = match (&x, &y) {
                (Some(x), Some(y)) => x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64()),
                (None, None) => true,
                _ => false,
            };
            if !same {
                let show = |v: &Option<Value>| v.as_ref().map_or("absent".to_string(), Value::to_string);
                return Err(f.err(
                    &format!("rope_parameters.{k}"),
                    format!("{} but rope_scaling.{k} is {}: the two disagree", show(&x), show(&y)),
                ));
            }
        }
    }
    Ok(found.first().copied())
}

/// transformers' rotary amplitude when `attention_factor` is not given:
/// `m(s, mscale) / m(s, mscale_all_dim)` when both are set (non-zero), else `m(s, 1)`.
fn implied_amplitude(factor: f32, mscale: Option<f32>, mscale_all_dim: f32) -> f32 {
    match mscale.filter(|m| *m != 0.0) {
        Some(m) if mscale_all_dim != 0.0 => yarn_mscale(factor, m) / yarn_mscale(factor, mscale_all_dim),
        _ => yarn_mscale(factor, 1.0),
    }
}

/// `(rope_theta, yarn)` as transformers computes them.
fn rope(f: &Fields, max_seq_len: usize) -> Result<(f32, Option<YarnConfig>)> {
    let top_theta = f.f32_or("rope_theta", Some(10000.0))?;
    let Some((obj, key)) = rope_object(f)? else { return Ok((top_theta, None)) };
    let prefix = format!("{key}.");
    let r = Fields { obj, prefix: &prefix };
    let theta = match r.get("rope_theta") {
        None => top_theta,
        Some(_) => {
            let inner = r.f32_or("rope_theta", None)?;
            if f.get("rope_theta").is_some() && inner != top_theta {
                return Err(r.err("rope_theta", format!("{inner} but the top-level rope_theta is {top_theta}")));
            }
            inner
        }
    };
    if r.f32_or("partial_rotary_factor", Some(1.0))? != 1.0 {
        return Err(r.err("partial_rotary_factor", "MLA rotates the whole qk_rope_head_dim: only 1 is supported"));
    }
    let kind_key = if r.get("rope_type").is_some() { "rope_type" } else { "type" };
    match r.str_or(kind_key, "default")? {
        "default" => return Ok((theta, None)),
        "yarn" => {}
        other => return Err(r.err(kind_key, format!("`{other}` is not supported (only default and yarn)"))),
    }
    let original_seq_len = match r.get("original_max_position_embeddings") {
        Some(_) => r.usize("original_max_position_embeddings")?,
        None => f.usize_or("original_max_position_embeddings", Some(max_seq_len))?,
    };
    let factor = match r.get("factor") {
        Some(_) => r.f32_or("factor", None)?,
        None => max_seq_len as f32 / original_seq_len.max(1) as f32,
    };
    // transformers reads `x or default`: 0 and null both mean the default.
    let nonzero = |key: &str| -> Result<Option<f32>> { Ok(Some(r.f32_or(key, Some(0.0))?).filter(|v| *v != 0.0)) };
    let mscale = nonzero("mscale")?;
    let mscale_all_dim = nonzero("mscale_all_dim")?;
    let rotary_amplitude = match r.get("attention_factor") {
        Some(_) => r.f32_or("attention_factor", None)?,
        None => implied_amplitude(factor, mscale, mscale_all_dim.unwrap_or(0.0)),
    };
    let yarn = YarnConfig {
        factor,
        original_seq_len,
        beta_fast: nonzero("beta_fast")?.unwrap_or(32.0),
        beta_slow: nonzero("beta_slow")?.unwrap_or(1.0),
        mscale,
        mscale_all_dim: mscale_all_dim.unwrap_or(0.0),
        rotary_amplitude,
        truncate: r.bool_or("truncate", true)?,
    };
    Ok((theta, Some(yarn)))
}

impl ModelConfig {
    pub(super) fn from_released(f: &Fields, notes: &mut Vec<String>) -> Result<Self> {
        for key in f.obj.keys() {
            if !READ_KEYS.contains(&key.as_str()) && !IGNORED_KEYS.iter().any(|(k, _)| k == key) {
                notes.push(format!("key `{key}` is not one v3lab reads; it is ignored"));
            }
        }
        if f.str_or("hidden_act", "silu")? != "silu" {
            return Err(f.err("hidden_act", "only silu (SwiGLU) is supported"));
        }
        for key in ["attention_bias", "mlp_bias"] {
            if f.bool_or(key, false)? {
                return Err(f.err(key, "projections with biases are not supported"));
            }
        }
        if !f.bool_or("rope_interleave", true)? {
            return Err(f.err(
                "rope_interleave",
                "false (rotate-half pairs) is not supported: v3lab rotates interleaved pairs, as the released weights",
            ));
        }
        let (nope, rope_dim) = (f.usize("qk_nope_head_dim")?, f.usize("qk_rope_head_dim")?);
        for (key, want) in [("head_dim", rope_dim), ("qk_head_dim", nope.saturating_add(rope_dim))] {
            if f.get(key).is_some() && f.usize(key)? != want {
                return Err(f.err(key, format!("{} but the head widths imply {want}", f.usize(key)?)));
            }
        }
        let max_seq_len = f.usize("max_position_embeddings")?;
        let (rope_theta, yarn) = rope(f, max_seq_len)?;
        let quantization = match f.get("quantization_config") {
            None => None,
            Some(v) => {
                let obj = v.as_object().ok_or_else(|| f.err("quantization_config", "expected an object or null"))?;
                let q = Fields { obj, prefix: "quantization_config." };
                if q.str_or("quant_method", "fp8")? != "fp8" {
                    return Err(q.err("quant_method", "only fp8 is supported"));
                }
                if q.str_or("fmt", "e4m3")? != "e4m3" {
                    return Err(q.err("fmt", "only e4m3 weights are supported"));
                }
                let block = match q.get("weight_block_size") {
                    None => [128, 128],
                    Some(b) => match b.as_array().map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>()).as_deref() {
                        Some([Some(r), Some(c)]) if *r > 0 && *c > 0 => [*r as usize, *c as usize],
                        _ => return Err(q.err("weight_block_size", format!("expected [rows, cols], got {b}"))),
                    },
                };
                Some(Fp8Quantization {
                    block,
                    activation_scheme: q.str_or("activation_scheme", "dynamic")?.to_string(),
                })
            }
        };
        let q_lora_rank = f.usize_or("q_lora_rank", Some(0))?;
        let topk_method = f.str_or("topk_method", "noaux_tc")?;
        if !["noaux_tc", "greedy", "group_limited_greedy"].contains(&topk_method) {
            return Err(
                f.err("topk_method", format!("`{topk_method}` is not one of noaux_tc, greedy, group_limited_greedy"))
            );
        }
        Ok(ModelConfig {
            vocab_size: f.usize("vocab_size")?,
            dim: f.usize("hidden_size")?,
            inter_dim: f.usize("intermediate_size")?,
            moe_inter_dim: f.usize("moe_intermediate_size")?,
            n_layers: f.usize("num_hidden_layers")?,
            n_dense_layers: f.usize_or("first_k_dense_replace", Some(0))?,
            moe_layer_freq: f.usize_or("moe_layer_freq", Some(1))?,
            n_heads: f.usize("num_attention_heads")?,
            n_routed_experts: f.usize("n_routed_experts")?,
            n_shared_experts: f.usize_or("n_shared_experts", Some(0))?,
            n_activated_experts: f.usize("num_experts_per_tok")?,
            n_expert_groups: match (f.get("n_group"), f.usize_or("topk_group", Some(1))?) {
                (None, keep) if keep > 1 => {
                    return Err(
                        f.err("n_group", format!("missing (1 group by default) but topk_group keeps {keep} groups"))
                    )
                }
                _ => f.usize_or("n_group", Some(1))?,
            },
            n_limited_groups: f.usize_or("topk_group", Some(1))?,
            score_func: f.score_func("scoring_func", "sigmoid")?,
            route_scale: f.f32_or("routed_scaling_factor", Some(1.0))?,
            norm_topk_prob: f.bool_or("norm_topk_prob", true)?,
            selection_bias: topk_method == "noaux_tc",
            q_lora_rank: (q_lora_rank > 0).then_some(q_lora_rank),
            kv_lora_rank: f.usize("kv_lora_rank")?,
            qk_nope_head_dim: nope,
            qk_rope_head_dim: rope_dim,
            v_head_dim: f.usize("v_head_dim")?,
            max_seq_len,
            rope_theta,
            yarn,
            rms_norm_eps: f.f32_or("rms_norm_eps", Some(1e-6))?,
            n_mtp_layers: f.usize_or("num_nextn_predict_layers", Some(0))?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            quantization,
            precision: crate::fp8::Precision::F32,
        })
    }

    /// The released `config.json` for this model (what `save` writes and transformers reads;
    /// `rope_scaling`, which transformers 4.x and 5.x both read).
    pub fn to_released_json(&self) -> Value {
        let rope_scaling = self.yarn.map(|y| {
            let mut r = json!({
                "type": "yarn",
                "factor": y.factor,
                "original_max_position_embeddings": y.original_seq_len,
                "beta_fast": y.beta_fast,
                "beta_slow": y.beta_slow,
                "mscale": y.mscale,
                "mscale_all_dim": y.mscale_all_dim,
            });
            if y.rotary_amplitude != implied_amplitude(y.factor, y.mscale, y.mscale_all_dim) {
                r["attention_factor"] = json!(y.rotary_amplitude);
            }
            if !y.truncate {
                r["truncate"] = json!(false);
            }
            r
        });
        let mut v = json!({
            "architectures": ["DeepseekV3ForCausalLM"],
            "model_type": "deepseek_v3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "intermediate_size": self.inter_dim,
            "moe_intermediate_size": self.moe_inter_dim,
            "num_hidden_layers": self.n_layers,
            "num_nextn_predict_layers": self.n_mtp_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_heads,
            "n_shared_experts": self.n_shared_experts,
            "n_routed_experts": self.n_routed_experts,
            "routed_scaling_factor": self.route_scale,
            "kv_lora_rank": self.kv_lora_rank,
            "q_lora_rank": self.q_lora_rank,
            "qk_rope_head_dim": self.qk_rope_head_dim,
            "v_head_dim": self.v_head_dim,
            "qk_nope_head_dim": self.qk_nope_head_dim,
            "n_group": self.n_expert_groups,
            "topk_group": self.n_limited_groups,
            "num_experts_per_tok": self.n_activated_experts,
            "first_k_dense_replace": self.n_dense_layers,
            "moe_layer_freq": self.moe_layer_freq,
            "norm_topk_prob": self.norm_topk_prob,
            "scoring_func": match self.score_func { ScoreFunc::Sigmoid => "sigmoid", ScoreFunc::Softmax => "softmax" },
            "topk_method": if self.selection_bias { "noaux_tc" } else if self.n_expert_groups > 1 { "group_limited_greedy" } else { "greedy" },
            "hidden_act": "silu",
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "rope_interleave": true,
            "attention_bias": false,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        if let Some(q) = &self.quantization {
            v["quantization_config"] = json!({
                "quant_method": "fp8", "fmt": "e4m3",
                "weight_block_size": q.block, "activation_scheme": q.activation_scheme,
            });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny released config with `extra` merged in (null removes a key).
    fn config(extra: Value) -> Value {
        let mut v = json!({
            "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "moe_intermediate_size": 8,
            "num_hidden_layers": 2, "first_k_dense_replace": 1, "num_attention_heads": 2,
            "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
            "kv_lora_rank": 8, "q_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4,
            "max_position_embeddings": 64, "rope_theta": 10000.0,
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    fn read(extra: Value) -> Result<(ModelConfig, Vec<String>)> {
        ModelConfig::from_json_with_notes(&config(extra))
    }

    fn err(extra: Value) -> String {
        read(extra).unwrap_err().to_string()
    }

    fn yarn(fields: Value) -> Value {
        let mut r = json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64});
        for (k, x) in fields.as_object().unwrap() {
            r[k] = x.clone();
        }
        r
    }

    #[test]
    fn yarn_applies_whenever_declared_with_transformers_amplitude_and_scale() {
        // Context equal to the original: the public code would skip YaRN, transformers does not.
        let (c, notes) = read(json!({"rope_parameters": yarn(json!({"mscale": 0.8, "mscale_all_dim": 0.6}))})).unwrap();
        let y = c.yarn.expect("declared, so applied");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((y.factor, y.original_seq_len, y.truncate), (4.0, 64, true));
        let m = |k: f32| 0.1 * k * 4f32.ln() + 1.0;
        assert!((y.rotary_amplitude - m(0.8) / m(0.6)).abs() < 1e-7);
        assert!((c.softmax_scale() - 8f32.powf(-0.5) * m(0.6) * m(0.6)).abs() < 1e-7);
        // Without mscale_all_dim: amplitude m(s, 1), softmax unscaled (transformers' rules).
        let y = read(json!({"rope_parameters": yarn(json!({}))})).unwrap().0.yarn.unwrap();
        assert!((y.rotary_amplitude - m(1.0)).abs() < 1e-7);
        assert_eq!(read(json!({"rope_parameters": yarn(json!({}))})).unwrap().0.softmax_scale(), 8f32.powf(-0.5));
        // attention_factor given wins; factor absent is the ratio of the contexts.
        let c = read(
            json!({"max_position_embeddings": 256, "rope_parameters": yarn(json!({"attention_factor": 1.5, "factor": null}))}),
        );
        let y = c.unwrap().0.yarn.unwrap();
        assert_eq!((y.rotary_amplitude, y.factor), (1.5, 4.0));
        // rope_theta inside rope_parameters (transformers 5.x writes it there only).
        let c = read(json!({"rope_theta": null, "rope_parameters": {"rope_type": "default", "rope_theta": 50000.0}}));
        assert_eq!((c.as_ref().unwrap().0.rope_theta, c.unwrap().0.yarn), (50000.0, None));
    }

    #[test]
    fn rope_parameters_and_rope_scaling_must_agree() {
        let legacy = json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64});
        let both = read(json!({"rope_scaling": legacy.clone(), "rope_parameters": yarn(json!({}))})).unwrap().0;
        assert_eq!(both.yarn.unwrap().factor, 4.0);
        let e = err(json!({"rope_scaling": legacy, "rope_parameters": yarn(json!({"factor": 8.0}))}));
        assert!(e.contains("rope_parameters.factor") && e.contains("rope_scaling.factor is 4.0"), "{e}");
        let e = err(json!({"rope_parameters": yarn(json!({"low_freq_factor": 1.0}))}));
        assert!(e.contains("rope_parameters.low_freq_factor") && e.contains("unknown"), "{e}");
        let e = err(json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}));
        assert!(e.contains("rope_parameters.rope_type") && e.contains("llama3"), "{e}");
        let e = err(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 5.0}}));
        assert!(e.contains("rope_parameters.rope_theta") && e.contains("top-level rope_theta is 10000"), "{e}");
        let e = err(json!({"rope_parameters": yarn(json!({"partial_rotary_factor": 0.5}))}));
        assert!(e.contains("partial_rotary_factor"), "{e}");
    }

    #[test]
    fn keys_are_read_ignored_or_reported_and_unsupported_values_refused() {
        let (_, notes) = read(json!({"num_key_value_heads": 128, "use_cache": true, "sliding_window": 4096})).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("`sliding_window`"), "{notes:?}");
        for (extra, key) in [
            (json!({"rope_interleave": false}), "rope_interleave"),
            (json!({"attention_bias": true}), "attention_bias"),
            (json!({"head_dim": 8}), "head_dim"),
            (json!({"hidden_act": "gelu"}), "hidden_act"),
        ] {
            let e = err(extra);
            assert!(e.contains(key), "{e}");
        }
        for key in READ_KEYS.iter().chain(IGNORED_KEYS.iter().map(|(k, _)| k)) {
            assert!(!READ_KEYS.contains(key) || !IGNORED_KEYS.iter().any(|(k, _)| k == key), "{key} in both lists");
        }
    }

    /// What v3lab writes, v3lab (and transformers) read back to the same model.
    #[test]
    fn released_json_round_trips() {
        for rope in [
            json!(null),
            yarn(json!({})),
            yarn(json!({"mscale": 1.0, "mscale_all_dim": 1.0})),
            yarn(json!({"attention_factor": 1.25, "truncate": false, "beta_fast": 16.0})),
        ] {
            let c = read(json!({"rope_parameters": rope.clone()})).unwrap().0;
            let back = ModelConfig::from_json(&c.to_released_json()).unwrap();
            assert_eq!(back, c, "{rope}");
        }
    }
}
