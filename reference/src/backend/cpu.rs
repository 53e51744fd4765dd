//! `CpuBackend`: the executable specification. Plain f32 over `ndarray`, no `unsafe`.
//! Matrix products go through ndarray's `dot` (matrixmultiply, threaded); loops over
//! independent (batch, head) pairs use rayon. Nothing else is clever.

use super::{Backend, RouteSpec, Routing, ScoreFunc};
use crate::error::{Error, Result};
use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2, Ix3, IxDyn, Zip};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBackend;

fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::shape(op, msg)
}

fn as2<'a>(t: &'a ArrayD<f32>, op: &'static str) -> Result<ArrayView2<'a, f32>> {
    t.view().into_dimensionality::<Ix2>().map_err(|_| shape_err(op, format!("expected rank 2, got {:?}", t.shape())))
}

/// `t` viewed as `[rows, last]`.
fn rows_view<'a>(t: &'a ArrayD<f32>, op: &'static str) -> Result<ArrayView2<'a, f32>> {
    let last = *t.shape().last().ok_or_else(|| shape_err(op, "scalar operand"))?;
    let rows = t.len() / last.max(1);
    t.view().into_shape_with_order((rows, last)).map_err(|e| shape_err(op, e.to_string()))
}

/// Indices of the `k` largest values, in descending order; ties go to the lower index
/// (what `torch.topk` does on the CPU and what the goldens show).
pub(crate) fn top_k_desc(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

impl CpuBackend {
    fn gate_row(scores: &[f32], bias: Option<&[f32]>, spec: &RouteSpec) -> (Vec<f32>, Vec<usize>) {
        let n_experts = scores.len();
        let mut choice: Vec<f32> = match bias {
            Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
            None => scores.to_vec(),
        };
        if spec.n_groups > 1 {
            let per_group = n_experts / spec.n_groups;
            // Group score: the sum of the two best biased scores with a bias (DeepSeek-V3),
            // the best score without (DeepSeek-V2).
            let group_scores: Vec<f32> = choice
                .chunks(per_group)
                .map(|g| {
                    if bias.is_some() {
                        top_k_desc(g, 2).iter().map(|&i| g[i]).sum()
                    } else {
                        g.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    }
                })
                .collect();
            let kept = top_k_desc(&group_scores, spec.topk_groups);
            for (g, chunk) in choice.chunks_mut(per_group).enumerate() {
                if !kept.contains(&g) {
                    chunk.fill(f32::NEG_INFINITY);
                }
            }
        }
        let chosen = top_k_desc(&choice, spec.top_k);
        let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        if spec.normalize {
            let sum: f32 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        weights.iter_mut().for_each(|w| *w *= spec.route_scale);
        (weights, chosen)
    }
}

impl Backend for CpuBackend {
    type Tensor = ArrayD<f32>;
    type Indices = ArrayD<i64>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        Ok(host.as_standard_layout().into_owned())
    }
    fn download(&self, t: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        Ok(t.clone())
    }
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<ArrayD<i64>> {
        Ok(host.as_standard_layout().into_owned())
    }
    fn download_indices(&self, t: &ArrayD<i64>) -> Result<ArrayD<i64>> {
        Ok(t.clone())
    }
    fn shape(&self, t: &ArrayD<f32>) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn zeros(&self, shape: &[usize]) -> Result<ArrayD<f32>> {
        Ok(ArrayD::zeros(IxDyn(shape)))
    }

    fn reshape(&self, t: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
        t.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .map_err(|_| shape_err("reshape", format!("{:?} into {:?}", t.shape(), shape)))
    }
    fn permute(&self, t: &ArrayD<f32>, axes: &[usize]) -> Result<ArrayD<f32>> {
        if axes.len() != t.ndim() {
            return Err(shape_err("permute", format!("{axes:?} for rank {}", t.ndim())));
        }
        Ok(t.view().permuted_axes(IxDyn(axes)).as_standard_layout().into_owned())
    }
    fn narrow(&self, t: &ArrayD<f32>, axis: usize, start: usize, len: usize) -> Result<ArrayD<f32>> {
        if axis >= t.ndim() || start + len > t.shape()[axis] {
            return Err(shape_err("narrow", format!("{start}..{} of axis {axis} in {:?}", start + len, t.shape())));
        }
        Ok(t.slice_axis(Axis(axis), (start..start + len).into()).as_standard_layout().into_owned())
    }
    fn concat(&self, parts: &[&ArrayD<f32>], axis: usize) -> Result<ArrayD<f32>> {
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let joined = ndarray::concatenate(Axis(axis), &views).map_err(|e| shape_err("concat", e.to_string()))?;
        Ok(joined.as_standard_layout().into_owned())
    }
    fn expand(&self, t: &ArrayD<f32>, axis: usize, n: usize) -> Result<ArrayD<f32>> {
        if t.shape().get(axis) != Some(&1) {
            return Err(shape_err("expand", format!("axis {axis} of {:?} is not 1", t.shape())));
        }
        let mut shape = t.shape().to_vec();
        shape[axis] = n;
        let view = t.broadcast(IxDyn(&shape)).ok_or_else(|| shape_err("expand", format!("{:?}", t.shape())))?;
        Ok(view.as_standard_layout().into_owned())
    }
    fn write_at(&self, dst: &mut ArrayD<f32>, src: &ArrayD<f32>, axis: usize, start: usize) -> Result<()> {
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

    fn add(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape())))?;
        Ok(a + &b)
    }
    fn mul(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape())))?;
        Ok(a * &b)
    }
    fn scale(&self, a: &ArrayD<f32>, s: f32) -> Result<ArrayD<f32>> {
        Ok(a * s)
    }

    fn linear(&self, x: &ArrayD<f32>, w: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let w2 = as2(w, "linear")?;
        let x2 = rows_view(x, "linear")?;
        if x2.ncols() != w2.ncols() {
            return Err(shape_err("linear", format!("x {:?} · wᵀ with w {:?}", x.shape(), w.shape())));
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = w2.nrows();
        Ok(x2.dot(&w2.t()).into_shape_with_order(IxDyn(&shape)).expect("row-major product"))
    }

    fn matmul(&self, a: &ArrayD<f32>, b: &ArrayD<f32>, trans_a: bool, trans_b: bool) -> Result<ArrayD<f32>> {
        let err = || shape_err("matmul", format!("{:?} · {:?} (trans {trans_a}, {trans_b})", a.shape(), b.shape()));
        let a3 = a.view().into_dimensionality::<Ix3>().map_err(|_| err())?;
        let b3 = b.view().into_dimensionality::<Ix3>().map_err(|_| err())?;
        fn pick(m: ArrayView2<'_, f32>, t: bool) -> ArrayView2<'_, f32> {
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
        let products: Vec<Array2<f32>> = (0..a3.dim().0)
            .into_par_iter()
            .map(|i| pick(a3.index_axis(Axis(0), i), trans_a).dot(&pick(b3.index_axis(Axis(0), i), trans_b)))
            .collect();
        let mut out = Array3::<f32>::zeros((a3.dim().0, m, n));
        for (mut dst, src) in out.outer_iter_mut().zip(&products) {
            dst.assign(src);
        }
        Ok(out.into_dyn())
    }

    fn rms_norm_forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, eps: f32) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let x2 = rows_view(x, "rms_norm_forward")?;
        if w.shape() != [x2.ncols()] {
            return Err(shape_err("rms_norm_forward", format!("x {:?} with weight {:?}", x.shape(), w.shape())));
        }
        let rstd: Vec<f32> = x2
            .outer_iter()
            .map(|row| 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32 + eps).sqrt())
            .collect();
        let gain = w.view().into_dimensionality::<ndarray::Ix1>().expect("checked rank 1");
        let mut y = x2.to_owned();
        for (mut row, r) in y.outer_iter_mut().zip(&rstd) {
            Zip::from(&mut row).and(&gain).for_each(|v, &g| *v = *v * r * g);
        }
        let rows_shape = &x.shape()[..x.ndim() - 1];
        Ok((
            y.into_shape_with_order(x.raw_dim()).expect("row-major"),
            ArrayD::from_shape_vec(IxDyn(rows_shape), rstd).expect("one rstd per row"),
        ))
    }

    fn swiglu_forward(&self, gate: &ArrayD<f32>, up: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        if gate.shape() != up.shape() {
            return Err(shape_err("swiglu_forward", format!("{:?} vs {:?}", gate.shape(), up.shape())));
        }
        Ok(Zip::from(gate).and(up).map_collect(|&g, &u| g / (1.0 + (-g).exp()) * u))
    }

    fn rope_forward(
        &self,
        x: &ArrayD<f32>,
        cos: &ArrayD<f32>,
        sin: &ArrayD<f32>,
        start_pos: usize,
    ) -> Result<ArrayD<f32>> {
        let &[_, seq, _, width] = x.shape() else {
            return Err(shape_err("rope_forward", format!("x must be [B, S, H, R], got {:?}", x.shape())));
        };
        let (cos, sin) = (as2(cos, "rope_forward")?, as2(sin, "rope_forward")?);
        if width % 2 != 0 || cos.ncols() != width / 2 || start_pos + seq > cos.nrows() {
            return Err(shape_err(
                "rope_forward",
                format!("x {:?} at {start_pos} with a table {:?}", x.shape(), cos.shape()),
            ));
        }
        let mut y = x.as_standard_layout().into_owned();
        for mut at_b in y.outer_iter_mut() {
            for (s, mut at_s) in at_b.outer_iter_mut().enumerate() {
                let (c, sn) = (cos.row(start_pos + s), sin.row(start_pos + s));
                for mut head in at_s.outer_iter_mut() {
                    for i in 0..width / 2 {
                        let (re, im) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = re * c[i] - im * sn[i];
                        head[2 * i + 1] = re * sn[i] + im * c[i];
                    }
                }
            }
        }
        Ok(y)
    }

    fn embedding_forward(&self, table: &ArrayD<f32>, tokens: &ArrayD<i64>) -> Result<ArrayD<f32>> {
        let table = as2(table, "embedding_forward")?;
        let mut out = Array2::<f32>::zeros((tokens.len(), table.ncols()));
        for (mut row, &t) in out.outer_iter_mut().zip(tokens.iter()) {
            let t = usize::try_from(t).ok().filter(|&t| t < table.nrows()).ok_or_else(|| {
                Error::Input(format!("token id {t} out of range for vocabulary size {}", table.nrows()))
            })?;
            row.assign(&table.row(t));
        }
        let mut shape = tokens.shape().to_vec();
        shape.push(table.ncols());
        Ok(out.into_shape_with_order(IxDyn(&shape)).expect("row-major"))
    }

    fn attention_forward(
        &self,
        q: &ArrayD<f32>,
        k: &ArrayD<f32>,
        v: &ArrayD<f32>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let (&[batch, seq, heads, dk], &[kb, keys, kh, dk2], &[vb, vt, vh, dv]) = (q.shape(), k.shape(), v.shape())
        else {
            return Err(shape_err("attention_forward", "q, k, v must be rank 4"));
        };
        if (kb, kh, dk2) != (batch, heads, dk) || (vb, vt, vh) != (batch, keys, heads) || q_offset + seq > keys {
            return Err(shape_err(
                "attention_forward",
                format!("q {:?}, k {:?}, v {:?}, offset {q_offset}", q.shape(), k.shape(), v.shape()),
            ));
        }
        // One (batch, head) pair per task: scores = q kᵀ · scale, causal mask, softmax, · v.
        let per_pair: Vec<(Array2<f32>, Vec<f32>)> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / heads, bh % heads);
                let qh = q.slice(s![b, .., h, ..]);
                let kh = k.slice(s![b, .., h, ..]);
                let vh = v.slice(s![b, .., h, ..]);
                let mut scores = qh.dot(&kh.t()) * scale;
                let mut lse = Vec::with_capacity(seq);
                for (i, mut row) in scores.outer_iter_mut().enumerate() {
                    let visible = q_offset + i + 1;
                    row.slice_mut(s![visible..]).fill(0.0);
                    let max = row.slice(s![..visible]).iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for p in row.slice_mut(s![..visible]).iter_mut() {
                        *p = (*p - max).exp();
                        sum += *p;
                    }
                    row.mapv_inplace(|p| p / sum);
                    lse.push(max + sum.ln());
                }
                (scores.dot(&vh), lse)
            })
            .collect();
        let mut out = ArrayD::<f32>::zeros(IxDyn(&[batch, seq, heads, dv]));
        let mut lse = ArrayD::<f32>::zeros(IxDyn(&[batch, heads, seq]));
        for (bh, (o, l)) in per_pair.into_iter().enumerate() {
            let (b, h) = (bh / heads, bh % heads);
            out.slice_mut(s![b, .., h, ..]).assign(&o);
            lse.slice_mut(s![b, h, ..]).assign(&ndarray::Array1::from(l));
        }
        Ok((out, lse))
    }

    fn route(&self, logits: &ArrayD<f32>, bias: Option<&ArrayD<f32>>, spec: &RouteSpec) -> Result<Routing<Self>> {
        let logits = as2(logits, "route")?;
        let n_experts = logits.ncols();
        if spec.n_groups == 0 || n_experts % spec.n_groups != 0 || spec.topk_groups > spec.n_groups {
            return Err(shape_err("route", format!("{n_experts} experts in {} groups", spec.n_groups)));
        }
        if bias.is_some_and(|b| b.shape() != [n_experts]) {
            return Err(shape_err("route", format!("bias for {n_experts} experts")));
        }
        let bias = bias.map(|b| b.as_slice().expect("standard layout"));
        let scores = match spec.score_func {
            ScoreFunc::Sigmoid => logits.mapv(|l| 1.0 / (1.0 + (-l).exp())),
            ScoreFunc::Softmax => {
                let mut s = logits.to_owned();
                for mut row in s.outer_iter_mut() {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    row.mapv_inplace(|l| (l - max).exp());
                    let sum = row.sum();
                    row.mapv_inplace(|p| p / sum);
                }
                s
            }
        };
        let n = scores.nrows();
        let mut weights = Array2::<f32>::zeros((n, spec.top_k));
        let mut indices = Array2::<i64>::zeros((n, spec.top_k));
        for (i, row) in scores.outer_iter().enumerate() {
            let (w, chosen) = Self::gate_row(row.as_slice().expect("standard layout"), bias, spec);
            for (j, (w, e)) in w.into_iter().zip(chosen).enumerate() {
                weights[[i, j]] = w;
                indices[[i, j]] = e as i64;
            }
        }
        Ok(Routing { weights: weights.into_dyn(), indices: indices.into_dyn(), scores: scores.into_dyn() })
    }

    fn gather_rows(&self, x: &ArrayD<f32>, rows: &ArrayD<i64>) -> Result<ArrayD<f32>> {
        let x2 = as2(x, "gather_rows")?;
        let mut out = Array2::<f32>::zeros((rows.len(), x2.ncols()));
        for (mut dst, &r) in out.outer_iter_mut().zip(rows.iter()) {
            let r = usize::try_from(r).ok().filter(|&r| r < x2.nrows());
            let r = r.ok_or_else(|| shape_err("gather_rows", format!("row out of range for {:?}", x.shape())))?;
            dst.assign(&x2.row(r));
        }
        Ok(out.into_dyn())
    }

    fn scatter_add_rows(&self, dst: &ArrayD<f32>, rows: &ArrayD<i64>, src: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let mut out = as2(dst, "scatter_add_rows")?.to_owned();
        let src = as2(src, "scatter_add_rows")?;
        if src.nrows() != rows.len() || src.ncols() != out.ncols() {
            return Err(shape_err("scatter_add_rows", format!("{:?} rows into {:?}", src.shape(), dst.shape())));
        }
        for (row, &r) in src.outer_iter().zip(rows.iter()) {
            let r = usize::try_from(r).ok().filter(|&r| r < out.nrows());
            let r =
                r.ok_or_else(|| shape_err("scatter_add_rows", format!("row out of range for {:?}", dst.shape())))?;
            let mut target = out.row_mut(r);
            target += &row;
        }
        Ok(out.into_dyn())
    }
}
