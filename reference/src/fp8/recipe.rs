//! The mixed-precision framework of DeepSeek-V3 §3.3.1 (Figure 6) for a whole model: which
//! linear layers multiply in reduced precision, and how.
//!
//! | the paper | here |
//! |---|---|
//! | "most core computation kernels, i.e., GEMM operations, are implemented in FP8" — Fprop, Dgrad, Wgrad of every linear | [`Precision::linear`] for MLA's projections, the experts (routed, shared, dense), the MTP projection |
//! | "the embedding module, the output head, MoE gating modules, normalization operators, and attention operators" kept in higher precision | those layers call `Backend::linear` / attention / norm ops in f32, whatever the precision |
//! | the BF16 baseline of Figure 10 | [`Precision::Bf16`]: GEMM inputs rounded to BF16, f32 accumulation |
//! | 1×128 activation tiles, 128×128 weight blocks, 128×1 for Wgrad (§3.3.2, §3.3.3) | [`ScalingRecipe::Tile`] (the default) |
//! | promotion to FP32 every N_C = 128 (§3.3.2) | [`Fp8Recipe::accumulator`], default `exact-promote-128` |
//! | the attention-output linear's inputs in E5M6 with power-of-two scales (§3.3.3) | [`LinearRole::AttentionOutput`], [`Fp8Recipe::attention_output_e5m6`] |
//! | Appendix B.2: activation gradients in 128×128 blocks diverge | [`Fp8Recipe::gradient_blocks`] |
//!
//! Not implemented: §3.3.3's caching of SwiGLU's input in FP8 with its output recomputed in
//! the backward (the simulation saves SwiGLU's f32 inputs and output), the FP8 copies of
//! activations kept for the backward (Wgrad re-quantizes `x` from f32 in 128×1 tiles, as
//! the paper's kernels re-tile them) and the BF16 optimizer moments.
//!
//! The precision is a runtime property of the model (`ModelConfig::precision`, as the
//! public `model.py` keeps `dtype` in its `ModelArgs`), set from `train.json`'s `precision`
//! and `fp8` fields; it is never written to `config.json`.

use super::accumulate::Accumulator;
use super::linear::{Fp8Linear, LinearPrecision, ScalingRecipe};

/// How the model's linear layers multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Every product in f32.
    #[default]
    F32,
    /// GEMM inputs rounded to BF16, f32 accumulation.
    Bf16,
    /// The FP8 recipe of §3.3.
    Fp8(Fp8Recipe),
}

/// The choices of the FP8 recipe that `train.json` (and `ablate-fp8`) can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Recipe {
    /// How the tensor core adds (a preset of [`Accumulator::preset`]).
    pub accumulator: Accumulator,
    /// Which elements share a scale.
    pub scaling: ScalingRecipe,
    /// Activation gradients in 128×128 blocks (Appendix B.2).
    pub gradient_blocks: bool,
    /// The attention-output linear's inputs in E5M6 with power-of-two scales (§3.3.3);
    /// false keeps them E4M3 like every other input.
    pub attention_output_e5m6: bool,
}

impl Default for Fp8Recipe {
    /// The paper's recipe.
    fn default() -> Self {
        let layer = Fp8Linear::default();
        Fp8Recipe {
            accumulator: layer.accumulator,
            scaling: layer.scaling,
            gradient_blocks: layer.gradient_blocks,
            attention_output_e5m6: true,
        }
    }
}

/// Which kind of linear layer asks for its precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearRole {
    /// Every FP8 linear but one: E4M3 inputs.
    Plain,
    /// MLA's `wo`, whose input is the attention output (§3.3.3's E5M6 special case).
    AttentionOutput,
}

impl Precision {
    /// The precision of one linear layer of the given role.
    pub fn linear(&self, role: LinearRole) -> LinearPrecision {
        match *self {
            Precision::F32 => LinearPrecision::F32,
            Precision::Bf16 => LinearPrecision::Bf16,
            Precision::Fp8(recipe) => {
                let base = match role {
                    LinearRole::AttentionOutput if recipe.attention_output_e5m6 => Fp8Linear::attention_output(),
                    _ => Fp8Linear::default(),
                };
                LinearPrecision::Fp8(Fp8Linear {
                    accumulator: recipe.accumulator,
                    scaling: recipe.scaling,
                    gradient_blocks: recipe.gradient_blocks,
                    ..base
                })
            }
        }
    }

    /// A short label: `f32`, `bf16`, or `fp8` with the choices that differ from the recipe.
    pub fn label(&self) -> String {
        match self {
            Precision::F32 => "f32".into(),
            Precision::Bf16 => "bf16".into(),
            Precision::Fp8(r) => {
                let mut parts = vec!["fp8".to_string()];
                let default = Fp8Recipe::default();
                if r.accumulator != default.accumulator {
                    let name = super::accumulate::PRESETS
                        .iter()
                        .find(|p| Accumulator::preset(p) == Some(r.accumulator))
                        .map_or("custom accumulator".to_string(), |p| p.to_string());
                    parts.push(name);
                }
                if r.scaling != default.scaling {
                    parts.push(format!("{} scaling", r.scaling.name()));
                }
                if r.gradient_blocks {
                    parts.push("gradient blocks".into());
                }
                if !r.attention_output_e5m6 {
                    parts.push("E4M3 attention output".into());
                }
                parts.join(", ")
            }
        }
    }
}
