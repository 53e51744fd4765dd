//! Study sizes. Every variant of a study trains the same model on the same data with the
//! same seeds; a preset fixes the model, the batch and the token budget.
//!
//! `smoke` is for tests (well under a minute on 2 cores); `small` (the default) sizes the
//! number of steps from the measured training speed so that the whole study, every variant
//! and seed, takes about 30 minutes on 2 cores; `medium` takes two and a half hours on a CPU;
//! `full` is for a GPU or a big machine.

use clap::ValueEnum;
use serde::Serialize;
use serde_json::json;
use v3lab_reference::ModelConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Smoke,
    Small,
    Medium,
    Full,
}

/// How long a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub enum Budget {
    /// Exactly this many steps.
    Steps(usize),
    /// As many steps as fit in this many seconds for the whole study, measured on this machine.
    StudySeconds(f64),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PresetSpec {
    pub preset: Preset,
    /// The public code's ModelArgs for the main model (MTP depth is set per variant).
    pub model: serde_json::Value,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub warmup_steps: usize,
    pub budget: Budget,
    /// Corpus bytes per domain (train and validation together).
    pub corpus_bytes_per_domain: usize,
    /// Validation sequences per domain for the final evaluation.
    pub eval_sequences: usize,
    /// Validate every this many steps during training (curves).
    pub eval_every: usize,
    /// Speculative decoding: prompts and new tokens per prompt.
    pub spec_prompts: usize,
    pub spec_tokens: usize,
    /// Multiplies the variants' selection-bias update rate γ. The bias moves at most γ per
    /// step, so a run of tens of steps needs a larger γ than the paper's 0.001 (tuned for
    /// tens of thousands of steps) to move at all; 1 keeps the paper's rate.
    pub bias_gamma_scale: f32,
}

fn model(dim: usize, layers: usize, heads: usize, experts: usize, top_k: usize, seq_len: usize) -> serde_json::Value {
    json!({
        "vocab_size": 260, "dim": dim, "inter_dim": 3 * dim, "moe_inter_dim": dim / 2,
        "n_layers": layers, "n_dense_layers": 1, "n_heads": heads,
        "n_routed_experts": experts, "n_shared_experts": 1, "n_activated_experts": top_k,
        "n_expert_groups": 1, "n_limited_groups": 1, "score_func": "sigmoid", "route_scale": 1.0,
        "q_lora_rank": dim / 2, "kv_lora_rank": dim / 4, "qk_nope_head_dim": dim / heads,
        "qk_rope_head_dim": dim / heads / 2, "v_head_dim": dim / heads,
        "max_seq_len": seq_len, "original_seq_len": seq_len, "rms_norm_eps": 1e-6,
    })
}

impl PresetSpec {
    pub fn of(preset: Preset) -> PresetSpec {
        match preset {
            Preset::Smoke => PresetSpec {
                preset,
                model: model(32, 2, 2, 8, 2, 64),
                seq_len: 64,
                batch_size: 4,
                lr: 3e-3,
                warmup_steps: 5,
                budget: Budget::Steps(60),
                corpus_bytes_per_domain: 150_000,
                eval_sequences: 6,
                eval_every: 20,
                spec_prompts: 2,
                spec_tokens: 12,
                bias_gamma_scale: 10.0,
            },
            Preset::Small => PresetSpec {
                preset,
                model: model(128, 4, 4, 16, 4, 128),
                seq_len: 128,
                batch_size: 8,
                lr: 2e-3,
                warmup_steps: 50,
                budget: Budget::StudySeconds(30.0 * 60.0),
                corpus_bytes_per_domain: 3_000_000,
                eval_sequences: 48,
                eval_every: 100,
                spec_prompts: 8,
                spec_tokens: 32,
                bias_gamma_scale: 1.0,
            },
            Preset::Medium => PresetSpec {
                preset,
                model: model(256, 4, 4, 16, 4, 256),
                seq_len: 256,
                batch_size: 8,
                lr: 1.5e-3,
                warmup_steps: 100,
                // Two and a half hours: long enough to be a step up from `small` (about 1,070
                // steps per run of 2,048 tokens in ablate-mtp at the measured 1.1 s per step),
                // short enough to run beside other work in one three-hour session.
                budget: Budget::StudySeconds(2.5 * 3600.0),
                corpus_bytes_per_domain: 12_000_000,
                eval_sequences: 96,
                eval_every: 250,
                spec_prompts: 16,
                spec_tokens: 64,
                bias_gamma_scale: 1.0,
            },
            Preset::Full => PresetSpec {
                preset,
                model: model(512, 8, 8, 64, 6, 512),
                seq_len: 512,
                batch_size: 16,
                lr: 1e-3,
                warmup_steps: 500,
                budget: Budget::Steps(20_000),
                corpus_bytes_per_domain: 60_000_000,
                eval_sequences: 256,
                eval_every: 1000,
                spec_prompts: 32,
                spec_tokens: 64,
                bias_gamma_scale: 1.0,
            },
        }
    }

    /// The model with `mtp_depth` MTP modules.
    pub fn model_config(&self, mtp_depth: usize) -> ModelConfig {
        let mut json = self.model.clone();
        json["n_mtp_layers"] = json!(mtp_depth);
        ModelConfig::from_json(&json).expect("presets hold valid configs")
    }
}
