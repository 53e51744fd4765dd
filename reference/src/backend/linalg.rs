//! Linear algebra: `nn.Linear` without bias, its backward, and batched products.

use super::LayoutOps;
use crate::error::Result;

family! {
    /// Matrix products (every linear map of MLA, the experts and the output head).
    pub trait LinalgOps: LayoutOps {
        /// `x [.., K] · wᵀ` for `w [M, K]`: `[.., M]` (`nn.Linear` without bias).
        fn linear(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
        /// Batched product over the leading axis: `a [Bt, M, K] · b [Bt, K, N]`, with either
        /// operand transposed in its last two axes when asked.
        fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor, trans_a: bool, trans_b: bool) -> Result<Self::Tensor>;
        /// Backward of [`LinalgOps::linear`] `y = x wᵀ`: `dx = dy w` `[.., K]` and
        /// `dw = dyᵀ x` `[M, K]` (summed over every leading position). The default composes
        /// `permute`, `linear` and `matmul`.
        fn linear_backward(
            &self,
            x: &Self::Tensor,
            w: &Self::Tensor,
            dy: &Self::Tensor,
        ) -> Result<(Self::Tensor, Self::Tensor)> {
            let dx = self.linear(dy, &self.permute(w, &[1, 0])?)?;
            let (k, m) = (self.shape(x).last().copied().unwrap_or(1), self.shape(w)[0]);
            let rows = self.shape(x).iter().product::<usize>() / k.max(1);
            let dy3 = self.reshape(dy, &[1, rows, m])?;
            let x3 = self.reshape(x, &[1, rows, k])?;
            let dw = self.reshape(&self.matmul(&dy3, &x3, true, false)?, &[m, k])?;
            Ok((dx, dw))
        }
    }
}
