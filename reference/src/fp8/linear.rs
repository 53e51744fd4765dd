//! The mixed-precision linear layer for training (DeepSeek-V3 §3.3.1, Figure 6): the three
//! GEMMs of a linear layer — Fprop (`y = x Wᵀ`), Dgrad (`dx = dy W`) and Wgrad
//! (`dW = dyᵀ x`) — take reduced-precision inputs, while the master weights, the weight
//! gradients and the outputs stay in f32 ("master weights, weight gradients, and optimizer
//! states are stored in higher precision").
//!
//! [`LinearPrecision`] names how one layer multiplies: `F32`, `Bf16` (inputs rounded to
//! BF16, f32 accumulation: the paper's baseline of Figure 10) or `Fp8` ([`Fp8Linear`]).
//!
//! FP8 quantization follows §3.3.2 (Figure 7a) and §3.3.3, always along each GEMM's K, with
//! the paper's groups when [`Fp8Linear::scaling`] is [`ScalingRecipe::Tile`]:
//! - Fprop: activations `x [T, In]` in 1×128 tiles (per token per 128 channels), weights
//!   `W [Out, In]` in 128×128 blocks.
//! - Dgrad: output gradients `dy [T, Out]` in 1×128 tiles (the paper quantizes activation
//!   gradients like activations; Appendix B.2 shows 128×128 blocks for them diverge: that is
//!   [`Fp8Linear::gradient_blocks`]), the same 128×128 weight blocks read transposed.
//! - Wgrad: K is the token axis, so `dy` and `x` are re-tiled to 128×1 (per channel per
//!   128 tokens, §3.3.3 "from 1x128 to 128x1"). The simulation re-quantizes them from their
//!   f32 values; the paper's kernels keep a second FP8 copy in that layout.
//!
//! Every tensor is E4M3 ("we adopt the E4M3 format on all tensors", §3.3.2), except in
//! [`Fp8Linear::attention_output`]: the inputs of the linear after attention are kept in
//! "a customized E5M6 data format" with power-of-two scales (§3.3.3).
//!
//! The GEMMs are [`gemm`]: bit-level emulation of the chosen [`Accumulator`], with exact
//! f64 partials (BLAS speed) wherever the accumulator adds exactly within a promotion.
//!
//! # Use from the training loop
//!
//! The model holds a [`Precision`](super::recipe::Precision) (`ModelConfig::precision`, set
//! from `train.json`), which gives each linear layer its [`LinearPrecision`]; the layer calls
//! `Backend::linear_mixed` and `linear_backward_mixed`, whose default runs
//! [`LinearPrecision::forward`] and [`LinearPrecision::backward`] here on the host.

use super::accumulate::Accumulator;
use super::codec::{round_to_bf16, Minifloat, E4M3, E5M6};
use super::gemm::gemm;
use super::scaling::{quantize, Granularity, ScaleMode, BLOCK};
use crate::error::Result;
use ndarray::{Array2, ArrayView2};

/// Which elements of a linear layer's operands share one FP8 scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingRecipe {
    /// One scale per tensor (the common FP8 recipe the paper improves on).
    Tensor,
    /// The paper's fine-grained scaling: activations and their gradients in 1×128 tiles
    /// along K (128×1 for Wgrad), weights in 128×128 blocks.
    Tile,
    /// Every operand, activations included, in 128×128 blocks.
    Block,
}

impl ScalingRecipe {
    pub const NAMES: [&'static str; 3] = ["tensor", "tile", "block"];

    pub fn parse(name: &str) -> Option<ScalingRecipe> {
        match name {
            "tensor" => Some(ScalingRecipe::Tensor),
            "tile" => Some(ScalingRecipe::Tile),
            "block" => Some(ScalingRecipe::Block),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScalingRecipe::Tensor => "tensor",
            ScalingRecipe::Tile => "tile",
            ScalingRecipe::Block => "block",
        }
    }
}

/// The FP8 recipe of one linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Linear {
    /// The format of the weights and the output gradients (E4M3 in the paper).
    pub format: Minifloat,
    /// The format of the layer's input activations `x` (E4M3; E5M6 after attention).
    pub activation_format: Minifloat,
    /// How the tensor core adds products (the default: exactly within each 128-long
    /// promotion interval, then in f32).
    pub accumulator: Accumulator,
    /// f32 scales, or powers of two (§3.3.3 uses those for cached/dispatched activations).
    pub scale_mode: ScaleMode,
    /// Tile and block edge (128 in the paper).
    pub block: usize,
    /// Which elements share a scale.
    pub scaling: ScalingRecipe,
    /// Output gradients `dy` in 128×128 blocks instead of tiles, in Dgrad and Wgrad
    /// (Appendix B.2's divergent variant).
    pub gradient_blocks: bool,
}

impl Default for Fp8Linear {
    /// The paper's recipe: E4M3 everywhere, 1×128 / 128×128 f32 scales, promotion every
    /// N_C = 128 into f32, on a tensor core that adds exactly in between (the H100's own
    /// truncation inside each 128 is [`Accumulator::H100_PROMOTE_128`], bit-level and slow).
    fn default() -> Self {
        Fp8Linear {
            format: E4M3,
            activation_format: E4M3,
            accumulator: Accumulator::EXACT_PROMOTE_128,
            scale_mode: ScaleMode::F32,
            block: BLOCK,
            scaling: ScalingRecipe::Tile,
            gradient_blocks: false,
        }
    }
}

impl Fp8Linear {
    /// The linear after attention (§3.3.3): its inputs in E5M6, every scale a power of two.
    pub fn attention_output() -> Self {
        Fp8Linear { activation_format: E5M6, scale_mode: ScaleMode::PowerOfTwo, ..Fp8Linear::default() }
    }

    /// The groups of an activation `[T, K]` (or, transposed, `[C, T]` for Wgrad).
    fn activation_groups(&self) -> Granularity {
        match self.scaling {
            ScalingRecipe::Tensor => Granularity::Tensor,
            ScalingRecipe::Tile => Granularity::Tile(self.block),
            ScalingRecipe::Block => Granularity::Block(self.block),
        }
    }

    fn weight_groups(&self) -> Granularity {
        match self.scaling {
            ScalingRecipe::Tensor => Granularity::Tensor,
            ScalingRecipe::Tile | ScalingRecipe::Block => Granularity::Block(self.block),
        }
    }

    fn gradient_groups(&self) -> Granularity {
        if self.gradient_blocks {
            Granularity::Block(self.block)
        } else {
            self.activation_groups()
        }
    }

    /// Fprop: `y [T, Out] = x [T, In] · W [Out, In]ᵀ`.
    pub fn forward(&self, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let xq = quantize(x, self.activation_format, self.activation_groups(), self.scale_mode);
        let wq = quantize(w, self.format, self.weight_groups(), self.scale_mode);
        gemm(&xq, &wq, &self.accumulator)
    }

    /// Dgrad: `dx [T, In] = dy [T, Out] · W [Out, In]`.
    pub fn backward_input(&self, dy: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let dyq = quantize(dy, self.format, self.gradient_groups(), self.scale_mode);
        // Wᵀ [In, Out] has K = Out along its rows' length; its 128×128 blocks are W's.
        let wtq = quantize(w.t(), self.format, self.weight_groups(), self.scale_mode);
        gemm(&dyq, &wtq, &self.accumulator)
    }

    /// Wgrad: `dW [Out, In] = dy [T, Out]ᵀ · x [T, In]`, K = T.
    pub fn backward_weight(&self, dy: ArrayView2<'_, f32>, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        // 128×1 tiles of dy and x are 1×128 tiles of their transposes, along K = T.
        let dytq = quantize(dy.t(), self.format, self.gradient_groups(), self.scale_mode);
        let xtq = quantize(x.t(), self.activation_format, self.activation_groups(), self.scale_mode);
        gemm(&dytq, &xtq, &self.accumulator)
    }
}

/// How a linear layer multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearPrecision {
    /// Plain f32 products.
    #[default]
    F32,
    /// Both GEMM inputs rounded to BF16 (nearest even), products accumulated in f32: the
    /// paper's BF16 baseline (Figure 10).
    Bf16,
    /// The FP8 simulation of Figure 6.
    Fp8(Fp8Linear),
}

impl LinearPrecision {
    /// `y [T, Out] = x [T, In] · W [Out, In]ᵀ`.
    pub fn forward(&self, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        match self {
            LinearPrecision::F32 => Ok(x.dot(&w.t())),
            LinearPrecision::Bf16 => Ok(bf16(x).dot(&bf16(w).t())),
            LinearPrecision::Fp8(cfg) => cfg.forward(x, w),
        }
    }

    /// `(dx [T, In], dW [Out, In])` from `dy [T, Out]`, the saved input `x` and `W`.
    pub fn backward(
        &self,
        dy: ArrayView2<'_, f32>,
        x: ArrayView2<'_, f32>,
        w: ArrayView2<'_, f32>,
    ) -> Result<(Array2<f32>, Array2<f32>)> {
        match self {
            LinearPrecision::F32 => Ok((dy.dot(&w), dy.t().dot(&x))),
            LinearPrecision::Bf16 => {
                let (dy, x, w) = (bf16(dy), bf16(x), bf16(w));
                Ok((dy.dot(&w), dy.t().dot(&x)))
            }
            LinearPrecision::Fp8(cfg) => Ok((cfg.backward_input(dy, w)?, cfg.backward_weight(dy, x)?)),
        }
    }
}

/// `x` with every element rounded to BF16.
pub fn bf16(x: ArrayView2<'_, f32>) -> Array2<f32> {
    x.mapv(round_to_bf16)
}
