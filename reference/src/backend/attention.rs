//! Causal softmax attention, its backward, and attention over MLA's latent cache.

use super::LayoutOps;
use crate::error::Result;

family! {
    /// Attention (eq. 10 of the report: `softmax(q kᵀ · scale) v`, causal).
    pub trait AttentionOps: LayoutOps {
        /// Causal softmax attention. `q [B, S, H, Dk]` at positions `q_offset..q_offset+S`,
        /// `k [B, T, H, Dk]`, `v [B, T, H, Dv]`; query i sees keys `0..=q_offset+i`.
        /// Returns `out [B, S, H, Dv]` and the log-sum-exp of each score row `[B, H, S]`.
        fn attention_forward(
            &self,
            q: &Self::Tensor,
            k: &Self::Tensor,
            v: &Self::Tensor,
            scale: f32,
            q_offset: usize,
        ) -> Result<(Self::Tensor, Self::Tensor)>;
        /// Backward of causal attention (FlashAttention-2's recomputation, Dao 2023, Alg. 2):
        /// `P = exp(scale·q kᵀ − lse)` from the saved `lse [B, H, S]`, `dv = Pᵀ dout`,
        /// `dP = dout vᵀ`, `dS = P ⊙ (dP − rowsum(dout ⊙ out))`, `dq = scale·dS k`,
        /// `dk = scale·dSᵀ q`. Returns `(dq, dk, dv)` shaped as `(q, k, v)`.
        #[allow(clippy::too_many_arguments)]
        fn attention_backward(
            &self,
            q: &Self::Tensor,
            k: &Self::Tensor,
            v: &Self::Tensor,
            out: &Self::Tensor,
            lse: &Self::Tensor,
            dout: &Self::Tensor,
            scale: f32,
            q_offset: usize,
        ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;

        /// Attention over MLA's absorbed latent cache (the public code's `attn_impl="absorb"`):
        /// `scores = (q_latent · kv_latentᵀ + q_pe · k_peᵀ) · scale`, `out = softmax · kv_latent`.
        /// `q_latent [B, S, H, C]`, `q_pe [B, S, H, R]`, `kv_latent [B, T, C]`, `k_pe [B, T, R]`;
        /// returns `[B, S, H, C]`. Every head shares the one latent key and value (MQA). The
        /// default concatenates, expands to every head and calls `attention_forward`.
        fn latent_attention_forward(
            &self,
            q_latent: &Self::Tensor,
            q_pe: &Self::Tensor,
            kv_latent: &Self::Tensor,
            k_pe: &Self::Tensor,
            scale: f32,
            q_offset: usize,
        ) -> Result<Self::Tensor> {
            let heads = self.shape(q_latent)[2];
            let q = self.concat(&[q_latent, q_pe], 3)?;
            let k = self.concat(&[kv_latent, k_pe], 2)?;
            let [b, t, ck] = self.shape(&k)[..] else { unreachable!("concat of rank-3 tensors") };
            let k = self.expand(&self.reshape(&k, &[b, t, 1, ck])?, 2, heads)?;
            let c = self.shape(kv_latent)[2];
            let v = self.expand(&self.reshape(kv_latent, &[b, t, 1, c])?, 2, heads)?;
            Ok(self.attention_forward(&q, &k, &v, scale, q_offset)?.0)
        }
    }
}
