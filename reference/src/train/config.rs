//! `train.json`: the hyper-parameters `v3lab train --config` reads, in the form of
//! `../shared/goldens/train-v3-tiny/train.json` (steps, lr, beta1, beta2, eps, weight_decay,
//! clip_norm, mtp_depth, mtp_lambda, balance {bias_gamma, aux, aux_alpha}), plus optional
//! sections for real runs: `schedule`, `data`, `eval_every`, `eval_batches`,
//! `checkpoint_every`. Unknown fields are errors; every error names the field.

use super::optim::AdamWConfig;
use super::schedule::LrSchedule;
use crate::balance::AuxLoss;
pub use crate::data::config::{DataConfig, TokenizerSpec};
use crate::error::{Error, Result};
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
        self.schedule.validate()
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
}
