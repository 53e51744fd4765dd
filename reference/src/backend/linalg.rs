//! Linear algebra: `nn.Linear` without bias, its backward, and batched products.

use super::LayoutOps;
use crate::error::{Error, Result};
use crate::fp8::LinearPrecision;
use ndarray::{ArrayD, Ix2, IxDyn};

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

        /// [`LinalgOps::linear`] with its GEMM inputs in `precision` (DeepSeek-V3 §3.3.1,
        /// Figure 6): `F32` is `linear` itself, `Bf16` rounds both inputs to BF16 and
        /// multiplies them with `linear`, `Fp8` quantizes them and emulates the FP8 GEMM. The
        /// default runs the reduced-precision cases on the host through
        /// [`LinearPrecision`] (download, simulate, upload): the specification a backend with
        /// its own FP8 GEMMs is held to.
        fn linear_mixed(&self, x: &Self::Tensor, w: &Self::Tensor, precision: &LinearPrecision) -> Result<Self::Tensor> {
            match precision {
                LinearPrecision::F32 => self.linear(x, w),
                LinearPrecision::Bf16 => self.linear(&bf16_on(self, x)?, &bf16_on(self, w)?),
                LinearPrecision::Fp8(_) => {
                    let (x_host, w_host) = (self.download(x)?, self.download(w)?);
                    let y = precision.forward(rows_of(&x_host, "x")?, matrix(&w_host, "w")?)?;
                    let mut shape = x_host.shape().to_vec();
                    *shape.last_mut().expect("x has rank ≥ 1") = y.ncols();
                    self.upload(y.into_dyn().into_shape_with_order(IxDyn(&shape)).expect("row-major").view())
                }
            }
        }
        /// Backward of [`LinalgOps::linear_mixed`]: `(dx, dw)` with the three GEMMs (Dgrad,
        /// Wgrad) in `precision`, as `linear_backward` is to `linear`.
        fn linear_backward_mixed(
            &self,
            x: &Self::Tensor,
            w: &Self::Tensor,
            dy: &Self::Tensor,
            precision: &LinearPrecision,
        ) -> Result<(Self::Tensor, Self::Tensor)> {
            match precision {
                LinearPrecision::F32 => self.linear_backward(x, w, dy),
                LinearPrecision::Bf16 => self.linear_backward(&bf16_on(self, x)?, &bf16_on(self, w)?, &bf16_on(self, dy)?),
                LinearPrecision::Fp8(_) => {
                    let (x_host, w_host, dy_host) = (self.download(x)?, self.download(w)?, self.download(dy)?);
                    let (dx, dw) = precision.backward(rows_of(&dy_host, "dy")?, rows_of(&x_host, "x")?, matrix(&w_host, "w")?)?;
                    let dx = dx.into_dyn().into_shape_with_order(x_host.raw_dim()).expect("row-major");
                    Ok((self.upload(dx.view())?, self.upload(dw.into_dyn().view())?))
                }
            }
        }
    }
}

/// `t` with every element rounded to BF16, on the backend (through the host).
fn bf16_on<B: LinalgOps>(b: &B, t: &B::Tensor) -> Result<B::Tensor> {
    b.upload(b.download(t)?.mapv(crate::fp8::round_to_bf16).view())
}

/// `t [.., K]` as a `[rows, K]` matrix view.
fn rows_of<'a>(t: &'a ArrayD<f32>, name: &str) -> Result<ndarray::ArrayView2<'a, f32>> {
    let k = *t.shape().last().ok_or_else(|| Error::shape("linear_mixed", format!("{name} is a scalar")))?;
    let rows = t.len().checked_div(k).unwrap_or(0);
    t.view()
        .into_shape_with_order((rows, k))
        .map_err(|e| Error::shape("linear_mixed", format!("{name} {:?}: {e}", t.shape())))
}

/// `t` as a matrix view (a weight `[M, K]`).
fn matrix<'a>(t: &'a ArrayD<f32>, name: &str) -> Result<ndarray::ArrayView2<'a, f32>> {
    t.view()
        .into_dimensionality::<Ix2>()
        .map_err(|_| Error::shape("linear_mixed", format!("{name} is {:?}, not a matrix", t.shape())))
}
