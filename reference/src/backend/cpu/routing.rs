//! The gate's routing decision and expert dispatch on the CPU (DeepSeek-V3 eqs. 13–16, the
//! public code's `Gate.forward`), with the routing's backward.

use super::{as2, checked_row, shape_err, zip, Cpu, CpuFloat};
use crate::backend::{RouteSpec, Routing, RoutingOps, ScoreFunc};
use crate::error::Result;
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayViewMut1, Zip};

impl<F: CpuFloat> RoutingOps for Cpu<F> {
    /// Scores (eq. 15: sigmoid, or softmax for V2), then one `gate_row` per token:
    /// `(weights [N, K], indices [N, K], scores [N, E])`.
    fn route(&self, logits: &ArrayD<F>, bias: Option<&ArrayD<F>>, spec: &RouteSpec) -> Result<Routing<Self>> {
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
            ScoreFunc::Sigmoid => {
                zip!(logits.len(), Zip::from(&logits), map_collect(|&l: &F| F::one() / (F::one() + (-l).exp())))
            }
            ScoreFunc::Softmax => {
                let mut s = logits.to_owned();
                for mut row in s.outer_iter_mut() {
                    let max = row.iter().copied().fold(F::neg_infinity(), F::max);
                    row.mapv_inplace(|l| (l - max).exp());
                    let sum = row.sum();
                    row.mapv_inplace(|p| p / sum);
                }
                s
            }
        };
        let n = scores.nrows();
        let mut weights = Array2::<F>::zeros((n, spec.top_k));
        let mut indices = Array2::<i64>::zeros((n, spec.top_k));
        zip!(
            scores.len(),
            Zip::from(weights.rows_mut()).and(indices.rows_mut()).and(scores.rows()),
            for_each(
                |mut weights: ArrayViewMut1<'_, F>, mut indices: ArrayViewMut1<'_, i64>, row: ArrayView1<'_, F>| {
                    let (w, chosen) = gate_row(row.as_slice().expect("standard layout"), bias, spec);
                    for (j, (w, e)) in w.into_iter().zip(chosen).enumerate() {
                        weights[j] = w;
                        indices[j] = e as i64;
                    }
                }
            )
        );
        Ok(Routing { weights: weights.into_dyn(), indices: indices.into_dyn(), scores: scores.into_dyn() })
    }
    /// Backward of [`Self::route`] to the logits: through the unbiased scores of the chosen experts
    /// (the choice, and so the bias, is piecewise constant: no gradient), plus `dscores`.
    fn route_backward(
        &self,
        routing: &Routing<Self>,
        dweights: &ArrayD<F>,
        dscores: Option<&ArrayD<F>>,
        spec: &RouteSpec,
    ) -> Result<ArrayD<F>> {
        let (scores, weights, indices) = (&routing.scores, &routing.weights, &routing.indices);
        let s = as2(scores, "route_backward")?;
        let (w, dw) = (as2(weights, "route_backward")?, as2(dweights, "route_backward")?);
        if w.shape() != dw.shape() || indices.shape() != w.shape() || w.nrows() != s.nrows() {
            return Err(shape_err("route_backward", format!("weights {:?}, dweights {:?}", w.shape(), dw.shape())));
        }
        let mut ds = match dscores {
            Some(d) if d.shape() == s.shape() => as2(d, "route_backward")?.to_owned(),
            Some(d) => return Err(shape_err("route_backward", format!("dscores {:?} for {:?}", d.shape(), s.shape()))),
            None => Array2::zeros(s.raw_dim()),
        };
        let r = F::of_f32(spec.route_scale);
        let idx = indices
            .view()
            .into_shape_with_order(w.raw_dim())
            .map_err(|e| shape_err("route_backward", e.to_string()))?;
        for n in 0..s.nrows() {
            let chosen = idx
                .row(n)
                .iter()
                .map(|&e| checked_row(e, s.ncols(), "expert index"))
                .collect::<Result<Vec<usize>>>()?;
            if spec.normalize {
                let sum: F = chosen.iter().map(|&e| s[[n, e]]).sum();
                let dot: F = dw.row(n).iter().zip(w.row(n)).map(|(&d, &w)| d * w / r).sum();
                for (j, &e) in chosen.iter().enumerate() {
                    ds[[n, e]] += r / sum * (dw[[n, j]] - dot);
                }
            } else {
                for (j, &e) in chosen.iter().enumerate() {
                    ds[[n, e]] += r * dw[[n, j]];
                }
            }
        }
        match spec.score_func {
            ScoreFunc::Sigmoid => {
                zip!(ds.len(), Zip::from(&mut ds).and(&s), for_each(|d: &mut F, &s| *d = *d * s * (F::one() - s)))
            }
            ScoreFunc::Softmax => {
                for (mut drow, srow) in ds.outer_iter_mut().zip(s.outer_iter()) {
                    let dot: F = drow.iter().zip(srow).map(|(&d, &s)| d * s).sum();
                    drow.zip_mut_with(&srow, |d, &s| *d = s * (*d - dot));
                }
            }
        }
        Ok(ds.into_dyn())
    }
    /// Rows `rows [M]` of `x [N, D]`.
    fn gather_rows(&self, x: &ArrayD<F>, rows: &ArrayD<i64>) -> Result<ArrayD<F>> {
        let x2 = as2(x, "gather_rows")?;
        let rows = row_numbers(rows, x2.nrows(), "gather_rows", x.shape())?;
        // Every row is written, so the output is not zeroed first.
        let mut out = Array2::<F>::uninit((rows.len(), x2.ncols()));
        zip!(
            out.len(),
            Zip::from(out.rows_mut()).and(&rows),
            for_each(|dst: ArrayViewMut1<'_, std::mem::MaybeUninit<F>>, &r| x2.row(r).assign_to(dst))
        );
        // SAFETY: each of the `rows.len()` output rows was assigned a whole row of `x` above.
        Ok(unsafe { out.assume_init() }.into_dyn())
    }
    /// One pass: each token's rows added into a zeroed output row in `order`'s order,
    /// tokens split across threads: the same sums as the default's gather and `sum_axis`.
    fn sum_rows_in_order(&self, rows: &ArrayD<F>, order: &ArrayD<i64>, k: usize) -> Result<ArrayD<F>> {
        let rows2 = as2(rows, "sum_rows_in_order")?;
        if k == 0 || !order.len().is_multiple_of(k) {
            return Err(shape_err("sum_rows_in_order", format!("{} indices in groups of {k}", order.len())));
        }
        let order = row_numbers(order, rows2.nrows(), "sum_rows_in_order", rows.shape())?;
        let tokens = order.len() / k;
        let order = order.into_shape_with_order((tokens, k)).expect("checked above");
        let mut out = Array2::<F>::zeros((order.nrows(), rows2.ncols()));
        zip!(
            out.len(),
            Zip::from(out.rows_mut()).and(order.rows()),
            for_each(|mut dst: ArrayViewMut1<'_, F>, picks: ArrayView1<'_, usize>| {
                for &r in picks {
                    dst += &rows2.row(r);
                }
            })
        );
        Ok(out.into_dyn())
    }
    /// `dst` with the rows of `src` added at `rows` (the backward of [`Self::gather_rows`]).
    fn scatter_add_rows(&self, dst: &ArrayD<F>, rows: &ArrayD<i64>, src: &ArrayD<F>) -> Result<ArrayD<F>> {
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

/// `indices` as row numbers of a tensor with `n_rows` rows (of shape `shape`, for the error).
fn row_numbers(indices: &ArrayD<i64>, n_rows: usize, op: &'static str, shape: &[usize]) -> Result<Array1<usize>> {
    indices
        .iter()
        .map(|&r| usize::try_from(r).ok().filter(|&r| r < n_rows))
        .collect::<Option<Array1<usize>>>()
        .ok_or_else(|| shape_err(op, format!("row out of range for {shape:?}")))
}

/// Indices of the `k` largest values, in descending order of the IEEE total order
/// (`f64::total_cmp` on the widened values: −NaN < −∞ < … < −0 < +0 < … < +∞ < +NaN); ties
/// go to the lower index (what `torch.topk` does on the CPU and what the goldens show).
/// `route.cu` breaks ties by the same order, so both backends choose alike even on ±0 and NaN.
pub(crate) fn top_k_desc<F: CpuFloat>(values: &[F], k: usize) -> Vec<usize> {
    let key = |i: usize| values[i].to_f64().expect("a float widens to f64");
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// One token: the biased scores choose (group limit, then top-k), the unbiased scores of
/// the chosen experts weigh (normalised for sigmoid, eq. 13; times the route scale).
fn gate_row<F: CpuFloat>(scores: &[F], bias: Option<&[F]>, spec: &RouteSpec) -> (Vec<F>, Vec<usize>) {
    let n_experts = scores.len();
    let mut choice: Vec<F> = match bias {
        Some(b) => scores.iter().zip(b).map(|(&s, &b)| s + b).collect(),
        None => scores.to_vec(),
    };
    if spec.n_groups > 1 {
        let per_group = n_experts / spec.n_groups;
        // Group score: the sum of the two best biased scores with a bias (DeepSeek-V3),
        // the best score without (DeepSeek-V2).
        let group_scores: Vec<F> = choice
            .chunks(per_group)
            .map(|g| {
                if bias.is_some() {
                    top_k_desc(g, 2).iter().map(|&i| g[i]).sum()
                } else {
                    g.iter().copied().fold(F::neg_infinity(), F::max)
                }
            })
            .collect();
        let kept = top_k_desc(&group_scores, spec.topk_groups);
        for (g, chunk) in choice.chunks_mut(per_group).enumerate() {
            if !kept.contains(&g) {
                chunk.fill(F::neg_infinity());
            }
        }
    }
    let chosen = top_k_desc(&choice, spec.top_k);
    let mut weights: Vec<F> = chosen.iter().map(|&e| scores[e]).collect();
    if spec.normalize {
        let sum: F = weights.iter().copied().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    let scale = F::of_f32(spec.route_scale);
    weights.iter_mut().for_each(|w| *w *= scale);
    (weights, chosen)
}

#[cfg(test)]
mod tests {
    use super::top_k_desc;

    /// The total order, exact ties to the lower index, in f32 and f64 alike.
    #[test]
    fn top_k_breaks_ties_by_the_total_order() {
        let neg_nan = -f32::NAN;
        let v = [0.5f32, f32::NAN, 0.5, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, neg_nan, -0.0];
        // +NaN, +inf, 0.5 (index 0 before 2), +0, −0 (index 3 before 8), −inf, −NaN.
        assert_eq!(top_k_desc(&v, 9), [1, 5, 0, 2, 4, 3, 8, 6, 7]);
        let w: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        assert_eq!(top_k_desc(&w, 9), [1, 5, 0, 2, 4, 3, 8, 6, 7]);
        assert_eq!(top_k_desc(&v, 3), [1, 5, 0]);
    }

    /// The one-pass override gives the bits of the trait's default (gather, then `sum_axis`),
    /// on sizes either side of the parallel threshold, with −0 rows and repeated picks.
    #[test]
    fn sum_rows_in_order_is_the_gather_and_sum_bit_for_bit() {
        use crate::backend::{ElementwiseOps, LayoutOps, RoutingOps};
        use crate::CpuBackend as B;
        use ndarray::{Array1, Array2};
        for (m, d, n, k) in [(5, 3, 4, 2), (700, 96, 600, 4)] {
            let rows = Array2::from_shape_fn((m, d), |(i, j)| {
                if i == 0 {
                    -0.0
                } else {
                    ((i * 7919 + j * 104729) % 1013) as f32 / 97.0 - 5.0
                }
            })
            .into_dyn();
            let order = Array1::from_shape_fn(n * k, |p| ((p * 31 + p / k) % m) as i64).into_dyn();
            let fused = B.sum_rows_in_order(&rows, &order, k).unwrap();
            let per_pair = B.reshape(&B.gather_rows(&rows, &order).unwrap(), &[n, k, d]).unwrap();
            let composed = B.reshape(&B.sum_axis(&per_pair, 1).unwrap(), &[n, d]).unwrap();
            assert_eq!(fused.shape(), &[n, d]);
            assert!(fused.iter().zip(&composed).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}×{d}, {n}×{k}");
        }
        let rows = Array2::<f32>::zeros((3, 2)).into_dyn();
        let err = |order: Vec<i64>, k| {
            B.sum_rows_in_order(&rows, &Array1::from(order).into_dyn(), k).unwrap_err().to_string()
        };
        assert!(err(vec![0, 1, 2], 2).contains("3 indices in groups of 2"));
        assert!(err(vec![0, 3], 2).contains("row out of range"));
        assert!(err(vec![0, 1], 0).contains("groups of 0"));
    }
}
