//! Norms, activations, the rotary embedding and the token embedding: each forward with
//! its backward.

use super::MemoryOps;
use crate::error::Result;

family! {
    /// The per-position layers of the model (public code: `RMSNorm`, `F.silu(w1(x)) * w3(x)`,
    /// `apply_rotary_emb`, `ParallelEmbedding`).
    pub trait NnOps: MemoryOps {
        /// RMSNorm over the last axis: `y = x / sqrt(mean(x²) + eps) · w`; also returns the
        /// reciprocal RMS `[..]` that the backward reuses.
        fn rms_norm_forward(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<(Self::Tensor, Self::Tensor)>;
        /// Backward of RMSNorm with the saved reciprocal RMS `rstd`: with `n` the width,
        /// `dx = rstd·(dy⊙w) − x·rstd³·⟨dy⊙w, x⟩/n` and `dw = Σ_rows dy⊙x·rstd`.
        fn rms_norm_backward(
            &self,
            x: &Self::Tensor,
            w: &Self::Tensor,
            rstd: &Self::Tensor,
            dy: &Self::Tensor,
        ) -> Result<(Self::Tensor, Self::Tensor)>;
        /// `silu(gate) · up` (SwiGLU).
        fn swiglu_forward(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
        /// Backward of SwiGLU: `dgate = dy·up·σ(g)(1 + g(1 − σ(g)))`, `dup = dy·silu(g)`.
        fn swiglu_backward(
            &self,
            gate: &Self::Tensor,
            up: &Self::Tensor,
            dy: &Self::Tensor,
        ) -> Result<(Self::Tensor, Self::Tensor)>;
        /// Rotary embedding on interleaved pairs `(x[2i], x[2i+1])` of the last axis of
        /// `x [B, S, H, R]`, position `start_pos + s`, angles given by `cos`/`sin [T, R/2]`.
        fn rope_forward(
            &self,
            x: &Self::Tensor,
            cos: &Self::Tensor,
            sin: &Self::Tensor,
            start_pos: usize,
        ) -> Result<Self::Tensor>;
        /// Backward of the rotary embedding: the transposed rotation (angle −θ) applied to `dy`.
        fn rope_backward(
            &self,
            dy: &Self::Tensor,
            cos: &Self::Tensor,
            sin: &Self::Tensor,
            start_pos: usize,
        ) -> Result<Self::Tensor>;
        /// Rows of `table [V, D]` for `tokens [..]`: `[.., D]`. Ids must be in range (checked
        /// before, where the tokens enter).
        fn embedding_forward(&self, table: &Self::Tensor, tokens: &Self::Indices) -> Result<Self::Tensor>;
        /// Backward of the embedding: `dy [.., D]` scatter-added into a `[vocab, D]` gradient
        /// (a token seen twice gets both rows).
        fn embedding_backward(&self, tokens: &Self::Indices, dy: &Self::Tensor, vocab: usize) -> Result<Self::Tensor>;
    }
}
