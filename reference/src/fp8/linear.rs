//! The FP8-simulated linear layer for training (DeepSeek-V3 §3.3.1, Figure 6): the three
//! GEMMs of a linear layer — Fprop (`y = x Wᵀ`), Dgrad (`dx = dy W`) and Wgrad
//! (`dW = dyᵀ x`) — take FP8 inputs and accumulate with a chosen [`Accumulator`], while the
//! master weights, the weight gradients and the outputs stay in f32 ("master weights,
//! weight gradients, and optimizer states are stored in higher precision").
//!
//! Quantization follows §3.3.2 (Figure 7a) and §3.3.3, always along each GEMM's K:
//! - Fprop: activations `x [T, In]` in 1×128 tiles (per token per 128 channels), weights
//!   `W [Out, In]` in 128×128 blocks.
//! - Dgrad: output gradients `dy [T, Out]` in 1×128 tiles (the paper quantizes activation
//!   gradients like activations; Appendix B.2 shows 128×128 blocks for them diverge), the
//!   same 128×128 weight blocks read transposed.
//! - Wgrad: K is the token axis, so `dy` and `x` are re-tiled to 128×1 (per channel per
//!   128 tokens, §3.3.3 "from 1x128 to 128x1"). The simulation re-quantizes them from their
//!   f32 values; the paper's kernels keep a second FP8 copy in that layout.
//!
//! Every tensor is E4M3 ("we adopt the E4M3 format on all tensors", §3.3.2), except in
//! [`Fp8Linear::attention_output`]: the inputs of the linear after attention are kept in
//! "a customized E5M6 data format" with power-of-two scales (§3.3.3).
//!
//! # Use from the training loop
//!
//! Hold a [`LinearPrecision`] in the model configuration (a value, never a global) and
//! call [`LinearPrecision::forward`] and [`LinearPrecision::backward`] where a linear layer
//! multiplies: `F32` is the plain f32 product, `Fp8(cfg)` the simulation. Both take and
//! return row-major f32 arrays with the shapes above.

use super::accumulate::Accumulator;
use super::codec::{Minifloat, E4M3, E5M6};
use super::gemm::gemm;
use super::scaling::{quantize, Granularity, ScaleMode, BLOCK};
use ndarray::{Array2, ArrayView2};

/// The FP8 recipe of one linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Linear {
    /// The format of the weights and the output gradients (E4M3 in the paper).
    pub format: Minifloat,
    /// The format of the layer's input activations `x` (E4M3; E5M6 after attention).
    pub activation_format: Minifloat,
    /// How the tensor core adds products (the paper: promotion every 128).
    pub accumulator: Accumulator,
    /// f32 scales, or powers of two (§3.3.3 uses those for cached/dispatched activations).
    pub scale_mode: ScaleMode,
    /// Tile and block edge (128 in the paper).
    pub block: usize,
}

impl Default for Fp8Linear {
    /// The paper's recipe: E4M3 everywhere, 1×128 / 128×128 f32 scales, N_C = 128.
    fn default() -> Self {
        Fp8Linear {
            format: E4M3,
            activation_format: E4M3,
            accumulator: Accumulator::PROMOTE_128,
            scale_mode: ScaleMode::F32,
            block: BLOCK,
        }
    }
}

impl Fp8Linear {
    /// The linear after attention (§3.3.3): its inputs in E5M6, every scale a power of two.
    pub fn attention_output() -> Self {
        Fp8Linear { activation_format: E5M6, scale_mode: ScaleMode::PowerOfTwo, ..Fp8Linear::default() }
    }

    /// Fprop: `y [T, Out] = x [T, In] · W [Out, In]ᵀ`.
    pub fn forward(&self, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
        let xq = quantize(x, self.activation_format, Granularity::Tile(self.block), self.scale_mode);
        let wq = quantize(w, self.format, Granularity::Block(self.block), self.scale_mode);
        gemm(&xq, &wq, &self.accumulator).expect("fp8 linear: x and W disagree on the input dimension")
    }

    /// Dgrad: `dx [T, In] = dy [T, Out] · W [Out, In]`.
    pub fn backward_input(&self, dy: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
        let dyq = quantize(dy, self.format, Granularity::Tile(self.block), self.scale_mode);
        // Wᵀ [In, Out] has K = Out along its rows' length; its 128×128 blocks are W's.
        let wtq = quantize(w.t(), self.format, Granularity::Block(self.block), self.scale_mode);
        gemm(&dyq, &wtq, &self.accumulator).expect("fp8 linear: dy and W disagree on the output dimension")
    }

    /// Wgrad: `dW [Out, In] = dy [T, Out]ᵀ · x [T, In]`, K = T.
    pub fn backward_weight(&self, dy: ArrayView2<'_, f32>, x: ArrayView2<'_, f32>) -> Array2<f32> {
        // 128×1 tiles of dy and x are 1×128 tiles of their transposes, along K = T.
        let dytq = quantize(dy.t(), self.format, Granularity::Tile(self.block), self.scale_mode);
        let xtq = quantize(x.t(), self.activation_format, Granularity::Tile(self.block), self.scale_mode);
        gemm(&dytq, &xtq, &self.accumulator).expect("fp8 linear: dy and x disagree on the token dimension")
    }
}

/// How a linear layer multiplies: the variant the training loop is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinearPrecision {
    /// Plain f32 products (the BF16/FP32 baseline of the paper's Figure 10).
    #[default]
    F32,
    /// The FP8 simulation of Figure 6.
    Fp8(Fp8Linear),
}

impl LinearPrecision {
    /// `y [T, Out] = x [T, In] · W [Out, In]ᵀ`.
    pub fn forward(&self, x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
        match self {
            LinearPrecision::F32 => x.dot(&w.t()),
            LinearPrecision::Fp8(cfg) => cfg.forward(x, w),
        }
    }

    /// `(dx [T, In], dW [Out, In])` from `dy [T, Out]`, the saved input `x` and `W`.
    pub fn backward(
        &self,
        dy: ArrayView2<'_, f32>,
        x: ArrayView2<'_, f32>,
        w: ArrayView2<'_, f32>,
    ) -> (Array2<f32>, Array2<f32>) {
        match self {
            LinearPrecision::F32 => (dy.dot(&w), dy.t().dot(&x)),
            LinearPrecision::Fp8(cfg) => (cfg.backward_input(dy, w), cfg.backward_weight(dy, x)),
        }
    }
}
