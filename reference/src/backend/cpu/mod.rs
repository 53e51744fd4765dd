//! The CPU backend: the executable specification. Plain floating point over `ndarray`, no
//! `unsafe`. Matrix products go through ndarray's `dot` (matrixmultiply, threaded), or,
//! with few rows (decoding), row by row without packing (`product.rs`); loops over
//! independent (batch, head) pairs use rayon. Nothing else is clever.
//!
//! It is generic over its float, [`Cpu<F>`]: [`CpuBackend`] (`Cpu<f32>`) is the reference;
//! [`CpuBackendF64`] runs the very same code in f64 so that every backward can be checked
//! against central finite differences without f32 rounding drowning the signal. Each
//! operation lives in the file of its idea, forward above backward:
//! `nn.rs` (RMSNorm, SwiGLU, rotary, embedding, cross-entropy), `attention.rs`,
//! `routing.rs` (gate, dispatch), `optim.rs` (AdamW).

mod attention;
mod nn;
mod optim;
mod product;
mod routing;

use super::{AdamWStep, Backend, RouteSpec, Routing};
use crate::error::{Error, Result};
use ndarray::{Array3, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2, Ix3, IxDyn};
use rayon::prelude::*;
use std::marker::PhantomData;

/// The float a [`Cpu`] backend computes in (f32 or f64).
pub trait CpuFloat:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + Send
    + Sync
    + std::fmt::Debug
    + Default
    + 'static
{
    fn of_f64(x: f64) -> Self;
    fn of_f32(x: f32) -> Self;
    fn as_f64(self) -> f64;
    fn as_f32(self) -> f32;
}

impl CpuFloat for f32 {
    fn of_f64(x: f64) -> Self {
        x as f32
    }
    fn of_f32(x: f32) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn as_f32(self) -> f32 {
        self
    }
}

impl CpuFloat for f64 {
    fn of_f64(x: f64) -> Self {
        x
    }
    fn of_f32(x: f32) -> Self {
        f64::from(x)
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn as_f32(self) -> f32 {
        self as f32
    }
}

/// The CPU backend computing in `F`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu<F>(PhantomData<F>);

/// The reference backend (f32).
pub type CpuBackend = Cpu<f32>;
/// The value of [`CpuBackend`], so that `let b = CpuBackend;` reads as for a unit struct.
#[allow(non_upper_case_globals)]
pub const CpuBackend: CpuBackend = Cpu(PhantomData);
/// The same code in f64, for finite-difference gradient checks.
pub type CpuBackendF64 = Cpu<f64>;
/// The value of [`CpuBackendF64`].
#[allow(non_upper_case_globals)]
pub const CpuBackendF64: CpuBackendF64 = Cpu(PhantomData);

pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::shape(op, msg)
}

pub(crate) fn as2<'a, F>(t: &'a ArrayD<F>, op: &'static str) -> Result<ArrayView2<'a, F>> {
    t.view().into_dimensionality::<Ix2>().map_err(|_| shape_err(op, format!("expected rank 2, got {:?}", t.shape())))
}

/// `t` viewed as `[rows, last]`.
pub(crate) fn rows_view<'a, F>(t: &'a ArrayD<F>, op: &'static str) -> Result<ArrayView2<'a, F>> {
    let last = *t.shape().last().ok_or_else(|| shape_err(op, "scalar operand"))?;
    let rows = t.len() / last.max(1);
    t.view().into_shape_with_order((rows, last)).map_err(|e| shape_err(op, e.to_string()))
}

/// `a` in row-major layout, copied only when it is not already (ndarray's products and
/// joins may hand back other layouts; `as_standard_layout().into_owned()` would copy always).
pub(crate) fn standard<F: Clone>(a: ArrayD<F>) -> ArrayD<F> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// A token id checked against the table size.
pub(crate) fn checked_row(id: i64, rows: usize, what: &str) -> Result<usize> {
    usize::try_from(id)
        .ok()
        .filter(|&r| r < rows)
        .ok_or_else(|| Error::Input(format!("{what} {id} out of range for {rows} rows")))
}

impl<F: CpuFloat> Backend for Cpu<F> {
    type Tensor = ArrayD<F>;
    type Indices = ArrayD<i64>;

    fn name(&self) -> &'static str {
        if std::mem::size_of::<F>() == 8 {
            "cpu-f64"
        } else {
            "cpu"
        }
    }

    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<ArrayD<F>> {
        Ok(host.mapv(F::of_f32))
    }
    fn download(&self, t: &ArrayD<F>) -> Result<ArrayD<f32>> {
        Ok(t.mapv(F::as_f32))
    }
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<ArrayD<i64>> {
        Ok(host.as_standard_layout().into_owned())
    }
    fn download_indices(&self, t: &ArrayD<i64>) -> Result<ArrayD<i64>> {
        Ok(t.clone())
    }
    fn indices_shape(&self, t: &ArrayD<i64>) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn shape(&self, t: &ArrayD<F>) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn zeros(&self, shape: &[usize]) -> Result<ArrayD<F>> {
        Ok(ArrayD::zeros(IxDyn(shape)))
    }
    fn download_f64(&self, t: &ArrayD<F>) -> Result<ArrayD<f64>> {
        Ok(t.mapv(F::as_f64))
    }
    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<ArrayD<F>> {
        Ok(host.mapv(F::of_f64))
    }

    fn reshape(&self, t: &ArrayD<F>, shape: &[usize]) -> Result<ArrayD<F>> {
        t.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .map_err(|_| shape_err("reshape", format!("{:?} into {:?}", t.shape(), shape)))
    }
    fn permute(&self, t: &ArrayD<F>, axes: &[usize]) -> Result<ArrayD<F>> {
        if axes.len() != t.ndim() {
            return Err(shape_err("permute", format!("{axes:?} for rank {}", t.ndim())));
        }
        Ok(t.view().permuted_axes(IxDyn(axes)).as_standard_layout().into_owned())
    }
    fn narrow(&self, t: &ArrayD<F>, axis: usize, start: usize, len: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() || start + len > t.shape()[axis] {
            return Err(shape_err("narrow", format!("{start}..{} of axis {axis} in {:?}", start + len, t.shape())));
        }
        Ok(t.slice_axis(Axis(axis), (start..start + len).into()).as_standard_layout().into_owned())
    }
    /// Row-major join: for each index of the axes before `axis`, the parts' contiguous
    /// blocks one after the other (plain copies; `ndarray::concatenate` walks dynamic-rank
    /// indices element by element).
    fn concat(&self, parts: &[&ArrayD<F>], axis: usize) -> Result<ArrayD<F>> {
        let first = parts.first().ok_or_else(|| shape_err("concat", "no parts"))?;
        let fits = |p: &ArrayD<F>| {
            p.ndim() == first.ndim() && (0..p.ndim()).all(|a| a == axis || p.shape()[a] == first.shape()[a])
        };
        if axis >= first.ndim() || !parts.iter().all(|p| fits(p)) {
            let shapes: Vec<_> = parts.iter().map(|p| p.shape().to_vec()).collect();
            return Err(shape_err("concat", format!("{shapes:?} along axis {axis}")));
        }
        let outer: usize = first.shape()[..axis].iter().product();
        let mut shape = first.shape().to_vec();
        shape[axis] = parts.iter().map(|p| p.shape()[axis]).sum();
        let blocks: Vec<_> = parts.iter().map(|p| p.as_standard_layout()).collect();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for block in &blocks {
                let width = block.len() / outer.max(1);
                data.extend_from_slice(&block.as_slice().expect("standard layout")[o * width..(o + 1) * width]);
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("sizes add up"))
    }
    fn expand(&self, t: &ArrayD<F>, axis: usize, n: usize) -> Result<ArrayD<F>> {
        if t.shape().get(axis) != Some(&1) {
            return Err(shape_err("expand", format!("axis {axis} of {:?} is not 1", t.shape())));
        }
        let mut shape = t.shape().to_vec();
        shape[axis] = n;
        let view = t.broadcast(IxDyn(&shape)).ok_or_else(|| shape_err("expand", format!("{:?}", t.shape())))?;
        Ok(view.as_standard_layout().into_owned())
    }
    fn write_at(&self, dst: &mut ArrayD<F>, src: &ArrayD<F>, axis: usize, start: usize) -> Result<()> {
        let len = src.shape().get(axis).copied().unwrap_or(0);
        if axis >= dst.ndim() || start + len > dst.shape()[axis] {
            return Err(shape_err("write_at", format!("{start}..{} of axis {axis} in {:?}", start + len, dst.shape())));
        }
        let mut target = dst.slice_axis_mut(Axis(axis), (start..start + len).into());
        if target.shape() != src.shape() {
            return Err(shape_err("write_at", format!("{:?} into {:?}", src.shape(), target.shape())));
        }
        target.assign(src);
        Ok(())
    }

    fn add(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape())))?;
        Ok(a + &b)
    }
    fn mul(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape())))?;
        Ok(a * &b)
    }
    fn scale(&self, a: &ArrayD<F>, s: f32) -> Result<ArrayD<F>> {
        Ok(a * F::of_f32(s))
    }
    fn sum_axis(&self, t: &ArrayD<F>, axis: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() {
            return Err(shape_err("sum_axis", format!("axis {axis} of {:?}", t.shape())));
        }
        Ok(t.sum_axis(Axis(axis)).insert_axis(Axis(axis)))
    }

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
        let dx = standard(dy2.dot(&w2).into_dyn()).into_shape_with_order(x.raw_dim()).expect("row-major product");
        Ok((dx, standard(dy2.t().dot(&x2).into_dyn())))
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

    fn rms_norm_forward(&self, x: &ArrayD<F>, w: &ArrayD<F>, eps: f32) -> Result<(ArrayD<F>, ArrayD<F>)> {
        nn::rms_norm_forward(x, w, F::of_f32(eps))
    }
    fn rms_norm_backward(
        &self,
        x: &ArrayD<F>,
        w: &ArrayD<F>,
        rstd: &ArrayD<F>,
        dy: &ArrayD<F>,
    ) -> Result<(ArrayD<F>, ArrayD<F>)> {
        nn::rms_norm_backward(x, w, rstd, dy)
    }
    fn swiglu_forward(&self, gate: &ArrayD<F>, up: &ArrayD<F>) -> Result<ArrayD<F>> {
        nn::swiglu_forward(gate, up)
    }
    fn swiglu_backward(&self, gate: &ArrayD<F>, up: &ArrayD<F>, dy: &ArrayD<F>) -> Result<(ArrayD<F>, ArrayD<F>)> {
        nn::swiglu_backward(gate, up, dy)
    }
    fn rope_forward(&self, x: &ArrayD<F>, cos: &ArrayD<F>, sin: &ArrayD<F>, start_pos: usize) -> Result<ArrayD<F>> {
        nn::rope(x, cos, sin, start_pos, false)
    }
    fn rope_backward(&self, dy: &ArrayD<F>, cos: &ArrayD<F>, sin: &ArrayD<F>, start_pos: usize) -> Result<ArrayD<F>> {
        nn::rope(dy, cos, sin, start_pos, true)
    }
    fn embedding_forward(&self, table: &ArrayD<F>, tokens: &ArrayD<i64>) -> Result<ArrayD<F>> {
        nn::embedding_forward(table, tokens)
    }
    fn embedding_backward(&self, tokens: &ArrayD<i64>, dy: &ArrayD<F>, vocab: usize) -> Result<ArrayD<F>> {
        nn::embedding_backward(tokens, dy, vocab)
    }
    fn cross_entropy_forward(&self, logits: &ArrayD<F>, targets: &ArrayD<i64>) -> Result<(f64, ArrayD<F>)> {
        nn::cross_entropy_forward(logits, targets)
    }
    fn cross_entropy_backward(
        &self,
        logits: &ArrayD<F>,
        lse: &ArrayD<F>,
        targets: &ArrayD<i64>,
        dloss: f32,
    ) -> Result<ArrayD<F>> {
        nn::cross_entropy_backward(logits, lse, targets, F::of_f32(dloss))
    }

    fn attention_forward(
        &self,
        q: &ArrayD<F>,
        k: &ArrayD<F>,
        v: &ArrayD<F>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<F>, ArrayD<F>)> {
        attention::forward(q, k, v, F::of_f32(scale), q_offset)
    }
    fn attention_backward(
        &self,
        q: &ArrayD<F>,
        k: &ArrayD<F>,
        v: &ArrayD<F>,
        out: &ArrayD<F>,
        lse: &ArrayD<F>,
        dout: &ArrayD<F>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<F>, ArrayD<F>, ArrayD<F>)> {
        attention::backward(q, k, v, out, lse, dout, F::of_f32(scale), q_offset)
    }

    fn adamw_step(
        &self,
        param: &mut ArrayD<F>,
        m: &mut ArrayD<F>,
        v: &mut ArrayD<F>,
        grad: &ArrayD<F>,
        h: &AdamWStep,
    ) -> Result<()> {
        optim::adamw_step(param, m, v, grad, h)
    }
    /// Sequential on purpose: a fixed summation order keeps training bit-reproducible.
    fn sum_squares(&self, t: &ArrayD<F>) -> Result<f64> {
        Ok(t.iter().map(|&x| x.as_f64() * x.as_f64()).sum())
    }

    fn route(&self, logits: &ArrayD<F>, bias: Option<&ArrayD<F>>, spec: &RouteSpec) -> Result<Routing<Self>> {
        let (weights, indices, scores) = routing::route(logits, bias, spec)?;
        Ok(Routing { weights, indices, scores })
    }
    fn route_backward(
        &self,
        r: &Routing<Self>,
        dweights: &ArrayD<F>,
        dscores: Option<&ArrayD<F>>,
        spec: &RouteSpec,
    ) -> Result<ArrayD<F>> {
        routing::route_backward(&r.scores, &r.weights, &r.indices, dweights, dscores, spec)
    }
    fn gather_rows(&self, x: &ArrayD<F>, rows: &ArrayD<i64>) -> Result<ArrayD<F>> {
        routing::gather_rows(x, rows)
    }
    fn scatter_add_rows(&self, dst: &ArrayD<F>, rows: &ArrayD<i64>, src: &ArrayD<F>) -> Result<ArrayD<F>> {
        routing::scatter_add_rows(dst, rows, src)
    }
}
