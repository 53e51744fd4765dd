//! `train.json`: the hyper-parameters `v3lab train --config` reads, in the form of
//! `../shared/goldens/train-v3-tiny/train.json` (steps, lr, beta1, beta2, eps, weight_decay,
//! clip_norm, mtp_depth, mtp_lambda, balance {bias_gamma, aux, aux_alpha}), plus optional
//! sections for real runs: `schedule`, `data`, `eval_every`, `eval_batches`,
//! `checkpoint_every`, and the GEMM precision (`precision`: `f32`, `bf16` or `fp8`, with the
//! FP8 recipe's options in `fp8`, DeepSeek-V3 §3.3). Unknown fields are errors; every error
//! names the field.

use super::optim::AdamWConfig;
use super::schedule::LrSchedule;
use crate::balance::AuxLoss;
pub use crate::data::config::{DataConfig, TokenizerSpec};
use crate::error::{Error, Result};
use crate::fp8::{Accumulator, Fp8Recipe, Precision, ScalingRecipe, PRESETS};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Balancing (DeepSeek-V3 §2.1.2, §4.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// γ of the selection-bias update `b_i += γ·sign(mean load − load_i)` (0 turns it off).
    pub bias_gamma: f32,
    /// Which balance loss joins the objective: "sequence", "batch" or "none".
    pub aux: AuxLoss,
    /// α of the balance loss.
    pub aux_alpha: f32,
}

/// How the linear layers' GEMMs run (§3.3.1): `train.json`'s `precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmPrecision {
    /// Every product in f32.
    #[default]
    F32,
    /// GEMM inputs rounded to BF16, f32 accumulation (the paper's baseline).
    Bf16,
    /// The FP8 recipe of §3.3, with the options of `fp8`.
    Fp8,
}

/// `train.json`'s `fp8`: the choices of the FP8 recipe, each defaulting to the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fp8Options {
    /// An accumulator preset (`v3lab fp8 gemm --accumulator`): `exact-promote-128` (the
    /// paper's promotion on an exact tensor core, fast), `h100-promote-128` (the measured
    /// H100, bit-level, slow), `h100` (no promotion: only differs with `tensor` scaling), ….
    pub accumulator: String,
    /// `tile` (1×128 activations, 128×128 weights: the paper), `tensor` or `block`.
    pub scaling: String,
    /// Activation gradients in 128×128 blocks (Appendix B.2's divergent variant).
    pub gradient_blocks: bool,
    /// The attention-output linear's inputs in E5M6 with power-of-two scales (§3.3.3).
    pub attention_output_e5m6: bool,
}

impl Default for Fp8Options {
    fn default() -> Self {
        Fp8Options {
            accumulator: "exact-promote-128".into(),
            scaling: "tile".into(),
            gradient_blocks: false,
            attention_output_e5m6: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: usize,
    /// Peak learning rate (the schedule multiplies it).
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global gradient-norm bound (0: no clipping).
    pub clip_norm: f32,
    /// D: MTP modules trained (must match the model's).
    pub mtp_depth: usize,
    /// λ of the MTP loss `λ/D · Σ_k CE_k` (§2.2, eq. 25).
    pub mtp_lambda: f32,
    pub balance: BalanceConfig,
    #[serde(default)]
    pub schedule: LrSchedule,
    #[serde(default)]
    pub data: DataConfig,
    /// Validate every this many steps (0: never; needs a corpus).
    #[serde(default)]
    pub eval_every: usize,
    /// Validation batches per evaluation (0: the whole validation split).
    #[serde(default)]
    pub eval_batches: usize,
    /// Write a checkpoint every this many steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// How the linear layers multiply (`f32` when absent).
    #[serde(default)]
    pub precision: GemmPrecision,
    /// The FP8 recipe's options (only with `precision: fp8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp8: Option<Fp8Options>,
}

impl TrainConfig {
    /// Reads and validates `path`; errors name the file and the field (`balance.aux_alpha`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Self::from_json_str(&text).map_err(|e| match e {
            Error::Config { field, msg } => Error::file(path, format!("field `{field}`: {msg}")),
            other => Error::file(path, other),
        })
    }

    pub fn from_json_str(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let cfg: TrainConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(root)".to_string() } else { field };
            Error::config(field, e.into_inner().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let finite_nonneg = [
            ("lr", self.lr),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("clip_norm", self.clip_norm),
            ("mtp_lambda", self.mtp_lambda),
            ("balance.bias_gamma", self.balance.bias_gamma),
            ("balance.aux_alpha", self.balance.aux_alpha),
        ];
        for (field, v) in finite_nonneg {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::config(field, format!("must be finite and non-negative, got {v}")));
            }
        }
        for (field, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::config(field, format!("must lie in [0, 1), got {v}")));
            }
        }
        if self.eps == 0.0 {
            return Err(Error::config("eps", "must be positive"));
        }
        if self.steps == 0 {
            return Err(Error::config("steps", "must be positive"));
        }
        let d = &self.data;
        if d.seq_len < 2 || d.batch_size == 0 {
            return Err(Error::config("data.seq_len", "needs seq_len ≥ 2 and batch_size ≥ 1"));
        }
        for (field, v) in [("data.fim_rate", d.fim_rate), ("data.val_fraction", d.val_fraction)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(field, format!("must lie in [0, 1], got {v}")));
            }
        }
        if d.val_fraction >= 1.0 {
            return Err(Error::config("data.val_fraction", "leaves no training documents"));
        }
        if d.batch_warmup.is_some_and(|w| w.start == 0) {
            return Err(Error::config("data.batch_warmup.start", "must be positive"));
        }
        self.schedule.validate()?;
        self.model_precision().map(|_| ())
    }

    /// The precision the model's linear layers run in (`ModelConfig::precision`), from
    /// `precision` and `fp8`; errors name the field.
    pub fn model_precision(&self) -> Result<Precision> {
        match (self.precision, &self.fp8) {
            (GemmPrecision::F32, None) => Ok(Precision::F32),
            (GemmPrecision::Bf16, None) => Ok(Precision::Bf16),
            (GemmPrecision::F32 | GemmPrecision::Bf16, Some(_)) => {
                Err(Error::config("fp8", "FP8 options are given but `precision` is not \"fp8\""))
            }
            (GemmPrecision::Fp8, options) => {
                let o = options.clone().unwrap_or_default();
                let accumulator = Accumulator::preset(&o.accumulator).ok_or_else(|| {
                    Error::config(
                        "fp8.accumulator",
                        format!("`{}` is not one of {}", o.accumulator, PRESETS.join(", ")),
                    )
                })?;
                let scaling = ScalingRecipe::parse(&o.scaling).ok_or_else(|| {
                    Error::config(
                        "fp8.scaling",
                        format!("`{}` is not one of {}", o.scaling, ScalingRecipe::NAMES.join(", ")),
                    )
                })?;
                if o.gradient_blocks && scaling == ScalingRecipe::Tensor {
                    return Err(Error::config("fp8.gradient_blocks", "needs `scaling` tile or block, not tensor"));
                }
                Ok(Precision::Fp8(Fp8Recipe {
                    accumulator,
                    scaling,
                    gradient_blocks: o.gradient_blocks,
                    attention_output_e5m6: o.attention_output_e5m6,
                }))
            }
        }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig { beta1: self.beta1, beta2: self.beta2, eps: self.eps, weight_decay: self.weight_decay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = r#"{"steps": 5, "lr": 0.001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-08,
        "weight_decay": 0.1, "clip_norm": 1.0, "mtp_depth": 1, "mtp_lambda": 0.3,
        "balance": {"bias_gamma": 0.05, "aux": "sequence", "aux_alpha": 0.01}}"#;

    #[test]
    fn reads_the_golden_form() {
        let c = TrainConfig::from_json_str(GOLDEN).unwrap();
        assert_eq!((c.steps, c.mtp_depth, c.balance.aux), (5, 1, AuxLoss::Sequence));
        assert_eq!(c.schedule, LrSchedule::Constant { warmup_steps: 0 });
        assert_eq!(c.data.fim_rate, 0.1);
    }

    #[test]
    fn errors_name_the_field() {
        let wrong_type = GOLDEN.replace("\"aux_alpha\": 0.01", "\"aux_alpha\": \"high\"");
        let e = TrainConfig::from_json_str(&wrong_type).unwrap_err().to_string();
        assert!(e.contains("balance.aux_alpha"), "{e}");
        let bad_aux = GOLDEN.replace("\"sequence\"", "\"global\"");
        let e = TrainConfig::from_json_str(&bad_aux).unwrap_err().to_string();
        assert!(e.contains("balance.aux") && e.contains("global"), "{e}");
        let missing = GOLDEN.replace("\"steps\": 5,", "");
        assert!(TrainConfig::from_json_str(&missing).unwrap_err().to_string().contains("steps"));
        let unknown = GOLDEN.replace("\"steps\": 5,", "\"steps\": 5, \"stpes\": 4,");
        assert!(TrainConfig::from_json_str(&unknown).unwrap_err().to_string().contains("stpes"));
        let beta = GOLDEN.replace("\"beta2\": 0.95", "\"beta2\": 1.5");
        assert!(TrainConfig::from_json_str(&beta).unwrap_err().to_string().contains("beta2"));
    }

    fn with(fields: &str) -> Result<TrainConfig> {
        TrainConfig::from_json_str(&GOLDEN.replacen("{", &format!("{{{fields}, "), 1))
    }

    #[test]
    fn precision_defaults_to_f32_and_fp8_to_the_papers_recipe() {
        assert_eq!(TrainConfig::from_json_str(GOLDEN).unwrap().model_precision().unwrap(), Precision::F32);
        assert_eq!(with(r#""precision": "bf16""#).unwrap().model_precision().unwrap(), Precision::Bf16);
        let fp8 = with(r#""precision": "fp8""#).unwrap().model_precision().unwrap();
        assert_eq!(fp8, Precision::Fp8(Fp8Recipe::default()));
        let Precision::Fp8(recipe) = fp8 else { unreachable!() };
        // The paper's choices, spelled out (§3.3.2, §3.3.3).
        assert_eq!(recipe.scaling, ScalingRecipe::Tile);
        assert_eq!(recipe.accumulator, Accumulator::preset("exact-promote-128").unwrap());
        assert!(recipe.attention_output_e5m6 && !recipe.gradient_blocks);
        let varied = with(
            r#""precision": "fp8", "fp8": {"accumulator": "h100", "scaling": "tensor", "attention_output_e5m6": false}"#,
        )
        .unwrap();
        let Precision::Fp8(v) = varied.model_precision().unwrap() else { panic!("fp8") };
        assert_eq!((v.accumulator, v.scaling), (Accumulator::preset("h100").unwrap(), ScalingRecipe::Tensor));
        assert!(!v.attention_output_e5m6);
        // The options survive a round trip through the checkpoint's copy of train.json.
        let again = TrainConfig::from_json_str(&serde_json::to_string(&varied).unwrap()).unwrap();
        assert_eq!(again, varied);
    }

    #[test]
    fn precision_errors_name_the_field() {
        let cases = [
            (r#""precision": "fp16""#, "precision"),
            (r#""precision": "fp8", "fp8": {"accumulator": "h200"}"#, "fp8.accumulator"),
            (r#""precision": "fp8", "fp8": {"scaling": "row"}"#, "fp8.scaling"),
            (r#""precision": "fp8", "fp8": {"scaling": "tensor", "gradient_blocks": true}"#, "fp8.gradient_blocks"),
            (r#""precision": "fp8", "fp8": {"promote": 64}"#, "promote"),
            (r#""precision": "bf16", "fp8": {}"#, "fp8"),
        ];
        for (fields, named) in cases {
            let e = with(fields).unwrap_err().to_string();
            assert!(e.contains(named), "{fields}: {e}");
        }
    }
}
