//! The optimiser: AdamW in place, and the squared norm that global-norm clipping needs.

use super::MemoryOps;
use crate::error::Result;

/// The hyper-parameters of one AdamW update (Loshchilov & Hutter, decoupled weight decay;
/// DeepSeek-V3 §4.2: β1 0.9, β2 0.95, weight decay 0.1), for [`OptimOps::adamw_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 0 for tensors that are not decayed (norm gains).
    pub weight_decay: f32,
    /// 1-based count of updates of this tensor, for the bias corrections.
    pub step: u64,
    /// Multiplies the gradient first (global-norm clipping's coefficient, 1 when unclipped).
    pub grad_scale: f32,
}

/// The coefficients of one AdamW update, formed in f64 from an [`AdamWStep`]; each backend
/// rounds them once to its precision, so every backend applies the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWCoefficients {
    /// `1 − lr·wd`, multiplying the parameter first.
    pub decay: f64,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f64,
    /// `√(1 − β2ᵗ)`, dividing `√v`.
    pub bc2_sqrt: f64,
    /// `1 − β1`, the first moment's weight of the new gradient.
    pub one_minus_beta1: f64,
    /// `1 − β2`, the second moment's weight of the new squared gradient.
    pub one_minus_beta2: f64,
}

impl AdamWStep {
    pub fn coefficients(&self) -> AdamWCoefficients {
        let t = self.step.max(1) as i32;
        let (lr, b1, b2) = (f64::from(self.lr), f64::from(self.beta1), f64::from(self.beta2));
        AdamWCoefficients {
            decay: 1.0 - lr * f64::from(self.weight_decay),
            step_size: lr / (1.0 - b1.powi(t)),
            bc2_sqrt: (1.0 - b2.powi(t)).sqrt(),
            one_minus_beta1: 1.0 - b1,
            one_minus_beta2: 1.0 - b2,
        }
    }
}

family! {
    /// The optimiser's two device operations.
    pub trait OptimOps: MemoryOps {
        /// One AdamW update of `param` in place, with its moments `m`, `v` (same shape), exactly
        /// as `torch.optim.AdamW`'s single-tensor path: `g = grad·grad_scale`;
        /// `p ← p·(1 − lr·wd)`; `m ← m + (g − m)(1 − β1)`; `v ← v·β2 + (1 − β2)·g²`;
        /// `p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)`. Scalars are formed in f64, then f32.
        fn adamw_step(
            &self,
            param: &mut Self::Tensor,
            m: &mut Self::Tensor,
            v: &mut Self::Tensor,
            grad: &Self::Tensor,
            h: &AdamWStep,
        ) -> Result<()>;

        /// `Σ x²` accumulated in f64 (global gradient norm; non-finite when any element is).
        fn sum_squares(&self, t: &Self::Tensor) -> Result<f64> {
            Ok(self.download(t)?.iter().map(|&x| f64::from(x) * f64::from(x)).sum())
        }
    }
}
