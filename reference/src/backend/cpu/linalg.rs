//! Matrix products on the CPU: the gemm crate (packed, threaded), or, with few
//! rows (decoding), row by row without packing (`product.rs`); the batched product runs its
//! independent products on rayon when they are large enough to pay for it.

use super::{as2, product, rows_view, shape_err, Cpu, CpuFloat};
use crate::backend::LinalgOps;
use crate::error::Result;
use ndarray::{Array3, ArrayD, ArrayView2, Axis, Ix3, IxDyn};
use rayon::prelude::*;

impl<F: CpuFloat> LinalgOps for Cpu<F> {
    fn linear(&self, x: &ArrayD<F>, w: &ArrayD<F>) -> Result<ArrayD<F>> {
        let w2 = as2(w, "linear")?;
        let x2 = rows_view(x, "linear")?;
        if x2.ncols() != w2.ncols() {
            return Err(shape_err("linear", format!("x {:?} · wᵀ with w {:?}", x.shape(), w.shape())));
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = w2.nrows();
        let y = product::product(x2, w2.t()).into_dyn();
        Ok(y.into_shape_with_order(IxDyn(&shape)).expect("row-major product"))
    }
    /// The trait's default with views instead of reshaped and transposed copies:
    /// `dx = dy · w`, `dw = dyᵀ · x` straight from the row views.
    fn linear_backward(&self, x: &ArrayD<F>, w: &ArrayD<F>, dy: &ArrayD<F>) -> Result<(ArrayD<F>, ArrayD<F>)> {
        let (w2, x2, dy2) =
            (as2(w, "linear_backward")?, rows_view(x, "linear_backward")?, rows_view(dy, "linear_backward")?);
        if x2.ncols() != w2.ncols() || dy2.ncols() != w2.nrows() || dy2.nrows() != x2.nrows() {
            return Err(shape_err(
                "linear_backward",
                format!("x {:?}, w {:?}, dy {:?}", x.shape(), w.shape(), dy.shape()),
            ));
        }
        // Dgrad and Wgrad side by side: Wgrad's output (Out × In, K = tokens) is often too
        // small to keep every thread busy alone. Each product is computed as it would be
        // alone, so the bits do not change.
        let (dx, dw) = rayon::join(|| product::product(dy2, w2), || product::product(dy2.t(), x2));
        Ok((dx.into_dyn().into_shape_with_order(x.raw_dim()).expect("row-major product"), dw.into_dyn()))
    }
    fn matmul(&self, a: &ArrayD<F>, b: &ArrayD<F>, trans_a: bool, trans_b: bool) -> Result<ArrayD<F>> {
        let err = || shape_err("matmul", format!("{:?} · {:?} (trans {trans_a}, {trans_b})", a.shape(), b.shape()));
        let a3 = a.view().into_dimensionality::<Ix3>().map_err(|_| err())?;
        let b3 = b.view().into_dimensionality::<Ix3>().map_err(|_| err())?;
        fn pick<F>(m: ArrayView2<'_, F>, t: bool) -> ArrayView2<'_, F> {
            if t {
                m.reversed_axes()
            } else {
                m
            }
        }
        let (m, k) = pick(a3.index_axis(Axis(0), 0), trans_a).dim();
        let (k2, n) = pick(b3.index_axis(Axis(0), 0), trans_b).dim();
        if a3.dim().0 != b3.dim().0 || k != k2 {
            return Err(err());
        }
        let mut out = Array3::<F>::zeros((a3.dim().0, m, n));
        let one = |(i, dst)| {
            let (ai, bi) = (pick(a3.index_axis(Axis(0), i), trans_a), pick(b3.index_axis(Axis(0), i), trans_b));
            product::product_into(ai, bi, dst);
        };
        if a3.dim().0 * m * k * n < product::SMALL_WORK {
            out.axis_iter_mut(Axis(0)).enumerate().for_each(one);
        } else {
            out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(one);
        }
        Ok(out.into_dyn())
    }
}
