//! The training loss: cross-entropy over the vocabulary.

use super::MemoryOps;
use crate::error::Result;

family! {
    /// Next-token cross-entropy (eq. 24 of the report for the MTP modules, the main loss otherwise).
    pub trait LossOps: MemoryOps {
        /// Mean cross-entropy of `logits [N, V]` against `targets [N]`:
        /// `1/N Σ_n (lse_n − logits[n, t_n])`; returns the loss (widened to f64) and the
        /// log-sum-exp of each row `[N]` for the backward.
        fn cross_entropy_forward(&self, logits: &Self::Tensor, targets: &Self::Indices) -> Result<(f64, Self::Tensor)>;
        /// `dloss · (softmax(logits) − onehot(targets)) / N`.
        fn cross_entropy_backward(
            &self,
            logits: &Self::Tensor,
            lse: &Self::Tensor,
            targets: &Self::Indices,
            dloss: f32,
        ) -> Result<Self::Tensor>;
    }
}
