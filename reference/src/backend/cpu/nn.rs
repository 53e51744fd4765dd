//! RMSNorm, SwiGLU, rotary embedding and embedding on the CPU: each forward with its
//! backward right below it.

use super::{as2, checked_row, rows_view, shape_err, zip, Cpu, CpuFloat};
use crate::backend::NnOps;
use crate::error::Result;
use ndarray::{Array1, Array2, ArrayD, IxDyn, Zip};

impl<F: CpuFloat> NnOps for Cpu<F> {
    /// RMSNorm over the last axis (Zhang & Sennrich 2019; the public code's `RMSNorm`):
    /// `y = x · rstd · w` with `rstd = 1/sqrt(mean(x²) + eps)`; returns `(y, rstd [..])`.
    fn rms_norm_forward(&self, x: &ArrayD<F>, w: &ArrayD<F>, eps: f32) -> Result<(ArrayD<F>, ArrayD<F>)> {
        let eps = F::of_f32(eps);
        let x2 = rows_view(x, "rms_norm_forward")?;
        if x2.ncols() == 0 {
            // mean(x²) over no values is 0/0: an error rather than rows of NaN.
            return Err(shape_err("rms_norm_forward", format!("x {:?} has rows of width 0", x.shape())));
        }
        if w.shape() != [x2.ncols()] {
            return Err(shape_err("rms_norm_forward", format!("x {:?} with weight {:?}", x.shape(), w.shape())));
        }
        let n = F::of_f64(x2.ncols() as f64);
        let gain = w.view().into_dimensionality::<ndarray::Ix1>().expect("checked rank 1");
        let mut y = x2.to_owned();
        let mut rstd = Array1::<F>::zeros(x2.nrows());
        zip!(
            y.len(),
            Zip::from(y.rows_mut()).and(&mut rstd),
            for_each(|mut row: ndarray::ArrayViewMut1<'_, F>, r: &mut F| {
                *r = F::one() / (row.iter().map(|&v| v * v).sum::<F>() / n + eps).sqrt();
                Zip::from(&mut row).and(&gain).for_each(|v, &g| *v = *v * *r * g);
            })
        );
        let rows_shape = &x.shape()[..x.ndim() - 1];
        Ok((
            y.into_shape_with_order(x.raw_dim()).expect("row-major"),
            rstd.into_shape_with_order(IxDyn(rows_shape)).expect("one rstd per row"),
        ))
    }
    /// Backward of [`Self::rms_norm_forward`]: `dx = rstd·g − x·rstd³·⟨g, x⟩/n` with `g = dy ⊙ w`,
    /// `dw = Σ_rows dy ⊙ x · rstd`.
    fn rms_norm_backward(
        &self,
        x: &ArrayD<F>,
        w: &ArrayD<F>,
        rstd: &ArrayD<F>,
        dy: &ArrayD<F>,
    ) -> Result<(ArrayD<F>, ArrayD<F>)> {
        if x.shape() != dy.shape() || rstd.len() * w.len() != x.len() {
            return Err(shape_err(
                "rms_norm_backward",
                format!("x {:?}, w {:?}, dy {:?}", x.shape(), w.shape(), dy.shape()),
            ));
        }
        let (x2, dy2) = (rows_view(x, "rms_norm_backward")?, rows_view(dy, "rms_norm_backward")?);
        let gain = w.view().into_dimensionality::<ndarray::Ix1>().map_err(|_| shape_err("rms_norm_backward", "w"))?;
        let n = F::of_f64(x2.ncols() as f64);
        let rstd =
            rstd.view().into_shape_with_order(x2.nrows()).map_err(|e| shape_err("rms_norm_backward", e.to_string()))?;
        let mut dx = Array2::<F>::zeros(x2.raw_dim());
        zip!(
            dx.len(),
            Zip::from(dx.rows_mut()).and(x2.rows()).and(dy2.rows()).and(&rstd),
            for_each(
                |mut dxr: ndarray::ArrayViewMut1<'_, F>,
                 xr: ndarray::ArrayView1<'_, F>,
                 dyr: ndarray::ArrayView1<'_, F>,
                 &r| {
                    let dot: F = Zip::from(&xr).and(&dyr).and(&gain).fold(F::zero(), |acc, &x, &d, &g| acc + d * g * x);
                    let c = r * r * r * dot / n;
                    Zip::from(&mut dxr)
                        .and(&xr)
                        .and(&dyr)
                        .and(&gain)
                        .for_each(|o: &mut F, &x, &d, &g| *o = r * d * g - x * c);
                }
            )
        );
        // dw sums over rows: one thread, in row order, so the result does not depend on a split.
        let mut dw = Array1::<F>::zeros(gain.len());
        for ((xr, dyr), &r) in x2.outer_iter().zip(dy2.outer_iter()).zip(rstd.iter()) {
            Zip::from(&mut dw).and(&xr).and(&dyr).for_each(|o, &x, &d| *o += d * x * r);
        }
        Ok((dx.into_shape_with_order(x.raw_dim()).expect("row-major"), dw.into_dyn()))
    }
    /// SwiGLU (Shazeer 2020; DeepSeek-V3's experts): `silu(gate) · up`.
    fn swiglu_forward(&self, gate: &ArrayD<F>, up: &ArrayD<F>) -> Result<ArrayD<F>> {
        if gate.shape() != up.shape() {
            return Err(shape_err("swiglu_forward", format!("{:?} vs {:?}", gate.shape(), up.shape())));
        }
        Ok(zip!(gate.len(), Zip::from(gate).and(up), map_collect(|&g, &u| g * sigmoid(g) * u)))
    }
    /// Backward of SwiGLU: `silu'(g) = σ(g)(1 + g(1 − σ(g)))`.
    fn swiglu_backward(&self, gate: &ArrayD<F>, up: &ArrayD<F>, dy: &ArrayD<F>) -> Result<(ArrayD<F>, ArrayD<F>)> {
        if gate.shape() != up.shape() || gate.shape() != dy.shape() {
            return Err(shape_err(
                "swiglu_backward",
                format!("{:?}, {:?}, {:?}", gate.shape(), up.shape(), dy.shape()),
            ));
        }
        // One pass, one sigmoid per element for both gradients.
        let (mut dgate, mut dup) = (ArrayD::zeros(gate.raw_dim()), ArrayD::zeros(gate.raw_dim()));
        zip!(
            gate.len(),
            Zip::from(&mut dgate).and(&mut dup).and(gate).and(up).and(dy),
            for_each(|dg: &mut F, du: &mut F, &g, &u, &d| {
                let s = sigmoid(g);
                *dg = d * u * s * (F::one() + g * (F::one() - s));
                *du = d * g * s;
            })
        );
        Ok((dgate, dup))
    }
    /// Rotary embedding on interleaved pairs (RoFormer; DeepSeek-V3 eqs. 3 and 8, the public
    /// code's `apply_rotary_emb`): pair i at position p turns by the table's angle.
    fn rope_forward(&self, x: &ArrayD<F>, cos: &ArrayD<F>, sin: &ArrayD<F>, start_pos: usize) -> Result<ArrayD<F>> {
        rotate(x, cos, sin, start_pos, false)
    }
    /// The transposed map (angle −θ): the backward, since the map is linear in `x` (a
    /// rotation scaled by YaRN's amplitude).
    fn rope_backward(&self, dy: &ArrayD<F>, cos: &ArrayD<F>, sin: &ArrayD<F>, start_pos: usize) -> Result<ArrayD<F>> {
        rotate(dy, cos, sin, start_pos, true)
    }
    /// Rows of `table [V, D]` for `tokens [..]`.
    fn embedding_forward(&self, table: &ArrayD<F>, tokens: &ArrayD<i64>) -> Result<ArrayD<F>> {
        let table = as2(table, "embedding_forward")?;
        let mut out = Array2::<F>::zeros((tokens.len(), table.ncols()));
        for (mut row, &t) in out.outer_iter_mut().zip(tokens.iter()) {
            row.assign(&table.row(checked_row(t, table.nrows(), "token id")?));
        }
        let mut shape = tokens.shape().to_vec();
        shape.push(table.ncols());
        Ok(out.into_shape_with_order(IxDyn(&shape)).expect("row-major"))
    }
    /// Backward of the embedding: each row of `dy` added to its token's row of a `[V, D]` zero.
    fn embedding_backward(&self, tokens: &ArrayD<i64>, dy: &ArrayD<F>, vocab: usize) -> Result<ArrayD<F>> {
        let dy2 = rows_view(dy, "embedding_backward")?;
        if dy2.nrows() != tokens.len() {
            return Err(shape_err(
                "embedding_backward",
                format!("dy {:?} for tokens {:?}", dy.shape(), tokens.shape()),
            ));
        }
        let mut grad = Array2::<F>::zeros((vocab, dy2.ncols()));
        for (row, &t) in dy2.outer_iter().zip(tokens.iter()) {
            let mut target = grad.row_mut(checked_row(t, vocab, "token id")?);
            target += &row;
        }
        Ok(grad.into_dyn())
    }
}

fn sigmoid<F: CpuFloat>(g: F) -> F {
    F::one() / (F::one() + (-g).exp())
}

/// The rotary embedding of `x [B, S, H, R]` from position `start_pos`, or with `transpose`
/// its transpose.
fn rotate<F: CpuFloat>(
    x: &ArrayD<F>,
    cos: &ArrayD<F>,
    sin: &ArrayD<F>,
    start_pos: usize,
    transpose: bool,
) -> Result<ArrayD<F>> {
    let &[_, seq, _, width] = x.shape() else {
        return Err(shape_err("rope", format!("x must be [B, S, H, R], got {:?}", x.shape())));
    };
    let (cos, sin) = (as2(cos, "rope")?, as2(sin, "rope")?);
    if width % 2 != 0 || cos.ncols() != width / 2 || start_pos + seq > cos.nrows() {
        return Err(shape_err("rope", format!("x {:?} at {start_pos} with a table {:?}", x.shape(), cos.shape())));
    }
    let mut y = x.as_standard_layout().into_owned();
    for mut at_b in y.outer_iter_mut() {
        for (s, mut at_s) in at_b.outer_iter_mut().enumerate() {
            let (c, sn) = (cos.row(start_pos + s), sin.row(start_pos + s));
            for mut head in at_s.outer_iter_mut() {
                for i in 0..width / 2 {
                    let (re, im) = (head[2 * i], head[2 * i + 1]);
                    let sn = if transpose { -sn[i] } else { sn[i] };
                    head[2 * i] = re * c[i] - im * sn;
                    head[2 * i + 1] = re * sn + im * c[i];
                }
            }
        }
    }
    Ok(y)
}
