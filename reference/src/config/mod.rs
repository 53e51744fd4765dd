//! Model configuration, read from either JSON layout:
//! - the public code's `ModelArgs` (`dim`, `n_layers`, `n_activated_experts`, `rope_factor`, ...),
//! - the released checkpoints' `config.json` (`hidden_size`, `num_experts_per_tok`,
//!   `rope_scaling`, `quantization_config`, ...).
//!
//! Internally the fields carry the public code's names (the shorter ones); errors name the
//! field as the file being read spells it. Each layout is computed as its own code computes
//! it: `ModelArgs` as the public `model.py` (YaRN only when `max_seq_len` exceeds
//! `original_seq_len`), `config.json` as transformers (YaRN whenever declared; see
//! `released.rs`). No key of a `config.json` is dropped silently: each is read, knowingly
//! ignored, or reported in the notes that loading returns. Nothing switches on a size: what the public code
//! decides by `dim == 7168` (the gate's selection bias) is the field `selection_bias`.

use crate::backend::{RouteSpec, ScoreFunc};
use crate::error::{Error, Result};
use crate::fp8::Precision;
use serde_json::{Map, Value};
use std::path::Path;

mod released;
pub mod size;
pub use released::{IGNORED_KEYS, READ_KEYS};

/// YaRN context extension (Peng et al.; DeepSeek-V3 §4.3 and the public `precompute_freqs_cis`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnConfig {
    /// s: the context-extension factor.
    pub factor: f32,
    /// The context length the rotary frequencies were trained for.
    pub original_seq_len: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
    /// YaRN's `mscale` as the file gives it (None where absent); with `mscale_all_dim` it
    /// sets the rotary amplitude in transformers' convention.
    pub mscale: Option<f32>,
    /// Scales the softmax: `softmax_scale · m²` with `m = 0.1 · mscale_all_dim · ln(s) + 1`
    /// (0: no scaling).
    pub mscale_all_dim: f32,
    /// Multiplies cos and sin of the rotary table (transformers' `attention_factor`; 1 in
    /// the public code, which never scales the rotation).
    pub rotary_amplitude: f32,
    /// Round the correction range to whole dimensions (floor/ceil), as the public code does
    /// and transformers does unless `truncate: false`.
    pub truncate: bool,
}

/// `0.1 · m · ln(s) + 1` (1 when s ≤ 1): YaRN's attention temperature.
pub fn yarn_mscale(factor: f32, m: f32) -> f32 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * m * factor.ln() + 1.0
    }
}

/// FP8 weights with block-wise scales (the released checkpoints' `quantization_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Quantization {
    /// `weight_block_size`: rows × columns that share one `weight_scale_inv` value.
    pub block: [usize; 2],
    pub activation_scheme: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub dim: usize,
    /// Hidden width of the dense FFN blocks.
    pub inter_dim: usize,
    /// Hidden width of one routed (and one shared) expert.
    pub moe_inter_dim: usize,
    pub n_layers: usize,
    /// The first `n_dense_layers` blocks use a dense FFN (`first_k_dense_replace`).
    pub n_dense_layers: usize,
    /// After those, every `moe_layer_freq`-th block is MoE.
    pub moe_layer_freq: usize,
    pub n_heads: usize,
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub n_activated_experts: usize,
    pub n_expert_groups: usize,
    pub n_limited_groups: usize,
    pub score_func: ScoreFunc,
    pub route_scale: f32,
    /// Divide the chosen experts' weights by their sum (`norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// The gate has a selection bias `b_i` added for choosing experts only (aux-loss-free
    /// balancing, `topk_method: noaux_tc`).
    pub selection_bias: bool,
    /// None: queries come from one full projection `wq`.
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub max_seq_len: usize,
    pub rope_theta: f32,
    pub yarn: Option<YarnConfig>,
    pub rms_norm_eps: f32,
    /// D: depth of multi-token prediction (`num_nextn_predict_layers`).
    pub n_mtp_layers: usize,
    pub tie_word_embeddings: bool,
    pub quantization: Option<Fp8Quantization>,
    /// How the linear layers multiply (f32, BF16 or FP8, §3.3): a runtime choice, as the
    /// public `model.py` keeps `dtype` in its `ModelArgs`. Never read from or written to
    /// `config.json`; training sets it from `train.json`'s `precision`.
    pub precision: Precision,
}

/// Internal name → released `config.json` name, for error messages about released files.
const RELEASED_NAMES: &[(&str, &str)] = &[
    ("dim", "hidden_size"),
    ("inter_dim", "intermediate_size"),
    ("moe_inter_dim", "moe_intermediate_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_dense_layers", "first_k_dense_replace"),
    ("n_heads", "num_attention_heads"),
    ("n_activated_experts", "num_experts_per_tok"),
    ("n_expert_groups", "n_group"),
    ("n_limited_groups", "topk_group"),
    ("score_func", "scoring_func"),
    ("route_scale", "routed_scaling_factor"),
    ("selection_bias", "topk_method"),
    ("max_seq_len", "max_position_embeddings"),
    ("yarn.factor", "rope_parameters.factor"),
    ("yarn.original_seq_len", "rope_parameters.original_max_position_embeddings"),
    ("yarn.attention_factor", "rope_parameters.attention_factor"),
    ("n_mtp_layers", "num_nextn_predict_layers"),
    ("yarn.mscale_all_dim", "rope_parameters.mscale_all_dim"),
];

/// A field as both layouts spell it: `hidden_size (dim)`, or the one name they share.
pub fn field_names(internal: &str) -> String {
    match RELEASED_NAMES.iter().find(|(i, _)| *i == internal) {
        Some((_, released)) => format!("{released} ({internal})"),
        None => internal.to_string(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    ModelArgs,
    Released,
}

/// Reads fields of one JSON object, naming the field in every error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl Fields<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> Error {
        Error::config(format!("{}{key}", self.prefix), msg)
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.err(key, "missing")),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}"))),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_or(key, None)
    }
    fn f32_or(&self, key: &str, default: Option<f32>) -> Result<f32> {
        match self.get(key) {
            None => default.ok_or_else(|| self.err(key, "missing")),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(key, format!("expected a finite number, got {v}"))),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, format!("expected true or false, got {v}"))),
        }
    }
    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.err(key, format!("expected a string, got {v}"))),
        }
    }
    fn score_func(&self, key: &str, default: &str) -> Result<ScoreFunc> {
        match self.str_or(key, default)? {
            "sigmoid" => Ok(ScoreFunc::Sigmoid),
            "softmax" => Ok(ScoreFunc::Softmax),
            other => Err(self.err(key, format!("`{other}` is not one of sigmoid, softmax"))),
        }
    }
}

impl ModelConfig {
    /// Reads `config.json` in either layout (told apart by `hidden_size` vs `dim`) and
    /// validates it. Keys it does not know are reported by [`Self::from_file_with_notes`].
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Self::from_file_with_notes(path)?.0)
    }

    /// As [`Self::from_file`], with one line per key of the file that v3lab neither reads
    /// nor knowingly ignores (for the caller to show).
    pub fn from_file_with_notes(path: &Path) -> Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| Error::file(path, format!("malformed JSON: {e}")))?;
        let (cfg, notes) = Self::from_json_with_notes(&value).map_err(|e| match e {
            Error::Config { field, msg } => Error::file(path, format!("config field `{field}`: {msg}")),
            other => other,
        })?;
        Ok((cfg, notes.into_iter().map(|n| format!("{}: {n}", path.display())).collect()))
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        Ok(Self::from_json_with_notes(value)?.0)
    }

    pub fn from_json_with_notes(value: &Value) -> Result<(Self, Vec<String>)> {
        let obj = value.as_object().ok_or_else(|| Error::config("(root)", "expected a JSON object"))?;
        let layout = if obj.contains_key("hidden_size") {
            Layout::Released
        } else if obj.contains_key("dim") {
            Layout::ModelArgs
        } else {
            return Err(Error::config(
                "hidden_size",
                "missing (neither a released config.json nor ModelArgs with `dim`)",
            ));
        };
        let f = Fields { obj, prefix: "" };
        let mut notes = Vec::new();
        let cfg = match layout {
            Layout::ModelArgs => Self::from_model_args(&f)?,
            Layout::Released => Self::from_released(&f, &mut notes)?,
        };
        cfg.validate().map_err(|e| match (e, layout) {
            (Error::Config { field, msg }, Layout::Released) => {
                let released = RELEASED_NAMES.iter().find(|(i, _)| *i == field).map_or(field.as_str(), |(_, r)| *r);
                Error::config(released, msg)
            }
            (e, _) => e,
        })?;
        Ok((cfg, notes))
    }

    fn from_model_args(f: &Fields) -> Result<Self> {
        let score_func = f.score_func("score_func", "softmax")?;
        let max_seq_len = f.usize_or("max_seq_len", Some(4096 * 4))?;
        let original_seq_len = f.usize_or("original_seq_len", Some(4096))?;
        let mscale = f.f32_or("mscale", Some(1.0))?;
        let q_lora_rank = f.usize_or("q_lora_rank", Some(0))?;
        Ok(ModelConfig {
            vocab_size: f.usize("vocab_size")?,
            dim: f.usize("dim")?,
            inter_dim: f.usize("inter_dim")?,
            moe_inter_dim: f.usize("moe_inter_dim")?,
            n_layers: f.usize("n_layers")?,
            n_dense_layers: f.usize_or("n_dense_layers", Some(1))?,
            moe_layer_freq: 1,
            n_heads: f.usize("n_heads")?,
            n_routed_experts: f.usize("n_routed_experts")?,
            n_shared_experts: f.usize_or("n_shared_experts", Some(2))?,
            n_activated_experts: f.usize("n_activated_experts")?,
            n_expert_groups: f.usize_or("n_expert_groups", Some(1))?,
            n_limited_groups: f.usize_or("n_limited_groups", Some(1))?,
            score_func,
            route_scale: f.f32_or("route_scale", Some(1.0))?,
            // The public code renormalises exactly when the scores are sigmoids, and its
            // DeepSeek-V3 gate carries the selection bias; v3lab keys both on the score
            // function rather than on `dim == 7168`, unless the file says otherwise.
            norm_topk_prob: f.bool_or("norm_topk_prob", score_func == ScoreFunc::Sigmoid)?,
            selection_bias: f.bool_or("selection_bias", score_func == ScoreFunc::Sigmoid)?,
            q_lora_rank: (q_lora_rank > 0).then_some(q_lora_rank),
            kv_lora_rank: f.usize("kv_lora_rank")?,
            qk_nope_head_dim: f.usize("qk_nope_head_dim")?,
            qk_rope_head_dim: f.usize("qk_rope_head_dim")?,
            v_head_dim: f.usize("v_head_dim")?,
            max_seq_len,
            rope_theta: f.f32_or("rope_theta", Some(10000.0))?,
            yarn: (max_seq_len > original_seq_len)
                .then(|| -> Result<YarnConfig> {
                    Ok(YarnConfig {
                        factor: f.f32_or("rope_factor", Some(40.0))?,
                        original_seq_len,
                        beta_fast: f.f32_or("beta_fast", Some(32.0))?,
                        beta_slow: f.f32_or("beta_slow", Some(1.0))?,
                        mscale: Some(mscale),
                        mscale_all_dim: mscale,
                        rotary_amplitude: 1.0,
                        truncate: true,
                    })
                })
                .transpose()?,
            rms_norm_eps: f.f32_or("rms_norm_eps", Some(1e-6))?,
            n_mtp_layers: f.usize_or("n_mtp_layers", Some(0))?,
            tie_word_embeddings: false,
            quantization: None,
            precision: Precision::F32,
        })
    }

    /// Rejects values that cannot describe a model, naming the (internal) field at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("dim", self.dim),
            ("inter_dim", self.inter_dim),
            ("moe_inter_dim", self.moe_inter_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_routed_experts", self.n_routed_experts),
            ("n_activated_experts", self.n_activated_experts),
            ("n_expert_groups", self.n_expert_groups),
            ("n_limited_groups", self.n_limited_groups),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("max_seq_len", self.max_seq_len),
            ("moe_layer_freq", self.moe_layer_freq),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        // Every size must be computable, before anything below adds widths: no overflow
        // anywhere (a large but valid model is fine: `inspect` is a calculator).
        self.sizes(crate::params::Layout::default())?;
        if self.n_activated_experts > self.n_routed_experts {
            return Err(Error::config(
                "n_activated_experts",
                format!(
                    "{} experts per token but only {} routed experts",
                    self.n_activated_experts, self.n_routed_experts
                ),
            ));
        }
        if !self.n_routed_experts.is_multiple_of(self.n_expert_groups) {
            return Err(Error::config(
                "n_expert_groups",
                format!("{} groups do not divide {} routed experts", self.n_expert_groups, self.n_routed_experts),
            ));
        }
        if self.n_limited_groups > self.n_expert_groups {
            return Err(Error::config(
                "n_limited_groups",
                format!("keeps {} of only {} groups", self.n_limited_groups, self.n_expert_groups),
            ));
        }
        let per_group = self.n_routed_experts / self.n_expert_groups;
        if self.n_activated_experts > self.n_limited_groups * per_group {
            return Err(Error::config(
                "n_activated_experts",
                format!(
                    "{} experts per token but the kept groups hold only {}",
                    self.n_activated_experts,
                    self.n_limited_groups * per_group
                ),
            ));
        }
        if self.selection_bias && self.n_expert_groups > 1 && per_group < 2 {
            return Err(Error::config("n_expert_groups", "group scores sum the top 2 experts: groups need at least 2"));
        }
        if self.n_dense_layers > self.n_layers {
            return Err(Error::config(
                "n_dense_layers",
                format!("{} dense layers of {}", self.n_dense_layers, self.n_layers),
            ));
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(Error::config("qk_rope_head_dim", "rotary pairs need an even width"));
        }
        // Parsing already rejected non-finite numbers.
        if self.route_scale <= 0.0 {
            return Err(Error::config("route_scale", "must be positive"));
        }
        if self.rms_norm_eps <= 0.0 {
            return Err(Error::config("rms_norm_eps", "must be positive"));
        }
        if self.rope_theta <= 1.0 {
            return Err(Error::config("rope_theta", "must exceed 1"));
        }
        if let Some(y) = &self.yarn {
            if y.factor < 1.0 {
                return Err(Error::config("yarn.factor", "must be at least 1"));
            }
            if y.original_seq_len == 0 {
                return Err(Error::config("yarn.original_seq_len", "must be positive"));
            }
            if y.rotary_amplitude <= 0.0 || !y.rotary_amplitude.is_finite() {
                return Err(Error::config(
                    "yarn.attention_factor",
                    format!(
                        "the rotary amplitude is {} (from factor {} and mscale {:?}): it must be positive and finite",
                        y.rotary_amplitude, y.factor, y.mscale
                    ),
                ));
            }
            let scale = self.softmax_scale();
            if !(scale.is_finite() && scale > 0.0) {
                return Err(Error::config(
                    "yarn.mscale_all_dim",
                    format!(
                        "{} with factor {} makes the softmax scale {scale}: it must be positive and finite",
                        y.mscale_all_dim, y.factor
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Whether block `layer` has an MoE FFN (the released rule: past the dense layers,
    /// every `moe_layer_freq`-th one).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        layer >= self.n_dense_layers && layer.is_multiple_of(self.moe_layer_freq)
    }

    /// Attention's softmax scale (DeepSeek-V3 eq. 10): `1/√(d_h + d_h^R)` with
    /// `d_h = qk_nope_head_dim`, `d_h^R = qk_rope_head_dim`, times YaRN's `m²`
    /// (`m = 0.1 · mscale_all_dim · ln(s) + 1`) when YaRN is active and `mscale_all_dim` ≠ 0,
    /// as the public code's `MLA.__init__` and transformers' `yarn_apply_mscale`.
    pub fn softmax_scale(&self) -> f32 {
        let base = (self.qk_head_dim() as f32).powf(-0.5);
        match &self.yarn {
            Some(y) if y.mscale_all_dim != 0.0 => {
                let m = yarn_mscale(y.factor, y.mscale_all_dim);
                base * m * m
            }
            _ => base,
        }
    }

    pub fn route_spec(&self) -> RouteSpec {
        RouteSpec {
            score_func: self.score_func,
            top_k: self.n_activated_experts,
            n_groups: self.n_expert_groups,
            topk_groups: self.n_limited_groups,
            normalize: self.norm_topk_prob,
            route_scale: self.route_scale,
        }
    }
}
