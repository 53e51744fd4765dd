//! Learning-rate and batch-size schedules (DeepSeek-V3 §4.2, "Hyper-Parameters").
//!
//! Every schedule multiplies the peak rate (`train.json` `lr`) by a factor of the step:
//! - `constant`: optional linear warm-up, then the peak;
//! - `cosine`: linear warm-up, cosine decay to `min_ratio · peak` over `decay_steps`, then flat
//!   (the aux-loss-free paper's 1B runs: 1e-3 down to 1e-4 after 1000 warm-up steps);
//! - `multi_step`: linear warm-up, then the factor of the last milestone passed (DeepSeekMoE
//!   §4.1.3: × 0.316 at 80 % and again at 90 % of the steps);
//! - `deepseek_v3`: the paper's stepped shape over `total_steps`, with the token fractions of
//!   the 14.8T-token run: linear warm-up (2K steps in the paper), constant to 10T tokens,
//!   cosine decay to 0.1 · peak (2.2e-4 → 2.2e-5) until 14.3T, constant 0.1 · peak for 333B
//!   tokens, then 7.3e-6 / 2.2e-4 · peak for the last 167B.
//!
//! The batch-size warm-up (§4.2: 3072 → 15360 sequences over the first 469B tokens, then
//! flat) is [`BatchWarmup`], a function of the tokens trained on.

pub use crate::data::config::BatchWarmup;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Token counts of DeepSeek-V3's pre-training (§4.2), in billions.
const V3_TOTAL: f64 = 14_800.0;
const V3_CONSTANT_UNTIL: f64 = 10_000.0;
const V3_COSINE_UNTIL: f64 = 14_300.0;
const V3_FIRST_TAIL_UNTIL: f64 = 14_300.0 + 333.0;
/// 2.2e-5 / 2.2e-4 and 7.3e-6 / 2.2e-4.
const V3_DECAYED: f64 = 0.1;
const V3_LAST: f64 = 7.3e-6 / 2.2e-4;

/// The learning-rate factor of each step (`train.json` `schedule`, `kind` tells which).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant {
        #[serde(default)]
        warmup_steps: usize,
    },
    Cosine {
        #[serde(default)]
        warmup_steps: usize,
        decay_steps: usize,
        min_ratio: f64,
    },
    MultiStep {
        #[serde(default)]
        warmup_steps: usize,
        /// `(step, factor)`: from `step` on the rate is `factor · peak`; ascending steps.
        milestones: Vec<(usize, f64)>,
    },
    DeepseekV3 {
        warmup_steps: usize,
        total_steps: usize,
    },
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::Constant { warmup_steps: 0 }
    }
}

impl LrSchedule {
    /// Checks the fields, naming the one at fault (`schedule.decay_steps`).
    pub fn validate(&self) -> Result<()> {
        let err = |f: &str, m: &str| Err(Error::config(format!("schedule.{f}"), m));
        match self {
            LrSchedule::Constant { .. } => Ok(()),
            LrSchedule::Cosine { decay_steps, min_ratio, .. } => {
                if *decay_steps == 0 {
                    return err("decay_steps", "must be positive");
                }
                if !(0.0..=1.0).contains(min_ratio) {
                    return err("min_ratio", "must lie in [0, 1]");
                }
                Ok(())
            }
            LrSchedule::MultiStep { milestones, .. } => {
                if milestones.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return err("milestones", "steps must be strictly ascending");
                }
                if milestones.iter().any(|(_, f)| !f.is_finite() || *f < 0.0) {
                    return err("milestones", "factors must be finite and non-negative");
                }
                Ok(())
            }
            LrSchedule::DeepseekV3 { warmup_steps, total_steps } => {
                if total_steps <= warmup_steps {
                    return err("total_steps", "must exceed warmup_steps");
                }
                Ok(())
            }
        }
    }

    fn warmup_steps(&self) -> usize {
        match self {
            LrSchedule::Constant { warmup_steps }
            | LrSchedule::Cosine { warmup_steps, .. }
            | LrSchedule::MultiStep { warmup_steps, .. }
            | LrSchedule::DeepseekV3 { warmup_steps, .. } => *warmup_steps,
        }
    }

    /// The factor at 0-based `step`. Warm-up is linear and reaches 1 on its last step:
    /// `(step + 1) / warmup_steps`.
    pub fn factor(&self, step: usize) -> f64 {
        let warmup = self.warmup_steps();
        if step < warmup {
            return (step + 1) as f64 / warmup as f64;
        }
        let after = (step - warmup) as f64;
        match self {
            LrSchedule::Constant { .. } => 1.0,
            LrSchedule::Cosine { decay_steps, min_ratio, .. } => {
                cosine(1.0, *min_ratio, (after / *decay_steps as f64).min(1.0))
            }
            LrSchedule::MultiStep { milestones, .. } => {
                milestones.iter().take_while(|(at, _)| *at <= step).last().map_or(1.0, |(_, f)| *f)
            }
            LrSchedule::DeepseekV3 { total_steps, .. } => {
                let at = |billions: f64| billions / V3_TOTAL * *total_steps as f64;
                let s = step as f64;
                if s < at(V3_CONSTANT_UNTIL) {
                    1.0
                } else if s < at(V3_COSINE_UNTIL) {
                    let span = at(V3_COSINE_UNTIL) - at(V3_CONSTANT_UNTIL);
                    cosine(1.0, V3_DECAYED, (s - at(V3_CONSTANT_UNTIL)) / span)
                } else if s < at(V3_FIRST_TAIL_UNTIL) {
                    V3_DECAYED
                } else {
                    V3_LAST
                }
            }
        }
    }

    /// The learning rate at 0-based `step` for peak rate `peak`.
    pub fn lr(&self, peak: f32, step: usize) -> f32 {
        (f64::from(peak) * self.factor(step)) as f32
    }
}

/// Half a cosine from `from` (progress 0) to `to` (progress 1).
fn cosine(from: f64, to: f64, progress: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_and_reaches_the_peak() {
        let s = LrSchedule::Constant { warmup_steps: 4 };
        let lrs: Vec<f64> = (0..6).map(|i| s.factor(i)).collect();
        assert_eq!(lrs, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn cosine_ends_at_the_floor() {
        let s = LrSchedule::Cosine { warmup_steps: 10, decay_steps: 100, min_ratio: 0.1 };
        assert_eq!(s.factor(10), 1.0);
        assert!((s.factor(60) - 0.55).abs() < 1e-12, "half-way is the mean of peak and floor");
        assert!((s.factor(110) - 0.1).abs() < 1e-12);
        assert!((s.factor(10_000) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn multi_step_as_deepseek_moe() {
        let s = LrSchedule::MultiStep { warmup_steps: 2, milestones: vec![(80, 0.316), (90, 0.316 * 0.316)] };
        assert_eq!(s.factor(79), 1.0);
        assert_eq!(s.factor(80), 0.316);
        assert_eq!(s.factor(95), 0.316 * 0.316);
    }

    #[test]
    fn deepseek_v3_shape_follows_the_token_fractions() {
        // 14_800 steps: one step per billion tokens of the paper's run.
        let s = LrSchedule::DeepseekV3 { warmup_steps: 2, total_steps: 14_800 };
        assert_eq!(s.factor(0), 0.5);
        assert_eq!(s.factor(9_999), 1.0);
        assert!((s.factor(12_150) - 0.55).abs() < 1e-12, "cosine mid-point");
        assert_eq!(s.factor(14_300), 0.1);
        assert_eq!(s.factor(14_632), 0.1);
        assert_eq!(s.factor(14_633), 7.3e-6 / 2.2e-4);
        assert!((s.lr(2.2e-4, 14_799) - 7.3e-6).abs() < 1e-11);
    }

    #[test]
    fn batch_warmup_grows_with_tokens() {
        let w = BatchWarmup { start: 3072, tokens: 469 };
        assert_eq!(w.batch_size(15360, 0), 3072);
        assert_eq!(w.batch_size(15360, 469), 15360);
        assert_eq!(w.batch_size(15360, 1000), 15360);
        let mid = w.batch_size(15360, 234);
        assert!(mid > 3072 && mid < 15360);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = LrSchedule::Cosine { warmup_steps: 0, decay_steps: 0, min_ratio: 0.1 };
        assert!(bad.validate().unwrap_err().to_string().contains("schedule.decay_steps"));
    }
}
