//! Causal softmax attention on the CPU (the naive path MLA trains with), forward and
//! backward, one (batch, head) pair per rayon task, each in blocks of 64 queries (and, for
//! dK and dV, 64 keys) so that the masked half of the scores is neither computed nor
//! multiplied.

use super::product::product;
use super::{shape_err, Cpu, CpuFloat};
use crate::backend::AttentionOps;
use crate::error::Result;
use ndarray::{s, Array2, ArrayD, Axis, IxDyn, Zip};
use rayon::prelude::*;

impl<F: CpuFloat> AttentionOps for Cpu<F> {
    /// `softmax(scale · q kᵀ + causal mask) v` (DeepSeek-V3 eq. 10) and the log-sum-exp of each
    /// score row `[B, H, S]`.
    fn attention_forward(
        &self,
        q: &ArrayD<F>,
        k: &ArrayD<F>,
        v: &ArrayD<F>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<F>, ArrayD<F>)> {
        let scale = F::of_f32(scale);
        let [batch, seq, heads, _, dv] = check(q, k, v, q_offset)?;
        let pair = |bh: usize| {
            let (b, h) = (bh / heads, bh % heads);
            let qh = q.slice(s![b, .., h, ..]);
            let kh = k.slice(s![b, .., h, ..]);
            let vh = v.slice(s![b, .., h, ..]);
            let mut out = Array2::<F>::zeros((seq, dv));
            let mut lse = Vec::with_capacity(seq);
            for (r0, r1) in query_blocks(seq) {
                // Rows r0..r1 see keys ..q_offset + r1 at most: the rest is masked, not computed.
                let keys = q_offset + r1;
                let mut probs = product(qh.slice(s![r0..r1, ..]), kh.slice(s![..keys, ..]).t());
                for (i, mut row) in probs.outer_iter_mut().enumerate() {
                    let (mut seen, mut masked) = row.view_mut().split_at(Axis(0), q_offset + r0 + i + 1);
                    seen.mapv_inplace(|x| x * scale);
                    let max = seen.iter().copied().fold(F::neg_infinity(), F::max);
                    let mut sum = F::zero();
                    for p in seen.iter_mut() {
                        *p = (*p - max).exp();
                        sum += *p;
                    }
                    seen.mapv_inplace(|p| p / sum);
                    masked.fill(F::zero());
                    lse.push(max + sum.ln());
                }
                out.slice_mut(s![r0..r1, ..]).assign(&product(probs.view(), vh.slice(s![..keys, ..])));
            }
            (out, lse)
        };
        // A decoding step's few (batch, head) pairs are cheaper here than handed to rayon's
        // threads and waited for.
        let keys = k.shape()[1];
        let per_pair: Vec<(Array2<F>, Vec<F>)> =
            if batch * heads * seq * keys * q.shape()[3] < super::product::SMALL_WORK {
                (0..batch * heads).map(pair).collect()
            } else {
                (0..batch * heads).into_par_iter().map(pair).collect()
            };
        let mut out = ArrayD::<F>::zeros(IxDyn(&[batch, seq, heads, dv]));
        let mut lse = ArrayD::<F>::zeros(IxDyn(&[batch, heads, seq]));
        for (bh, (o, l)) in per_pair.into_iter().enumerate() {
            let (b, h) = (bh / heads, bh % heads);
            out.slice_mut(s![b, .., h, ..]).assign(&o);
            lse.slice_mut(s![b, h, ..]).assign(&ndarray::Array1::from(l));
        }
        Ok((out, lse))
    }
    /// Backward of [`Self::attention_forward`], recomputing the probabilities from the saved `lse`
    /// (FlashAttention-2, Dao 2023, Algorithm 2, without the tiling).
    #[allow(clippy::too_many_arguments)]
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
        let scale = F::of_f32(scale);
        let [batch, seq, heads, _, _] = check(q, k, v, q_offset)?;
        if dout.shape() != out.shape() || lse.shape() != [batch, heads, seq] {
            return Err(shape_err("attention_backward", format!("dout {:?}, lse {:?}", dout.shape(), lse.shape())));
        }
        type Grads<F> = (Array2<F>, Array2<F>, Array2<F>);
        let per_pair: Vec<Grads<F>> = (0..batch * heads)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / heads, bh % heads);
                let qh = q.slice(s![b, .., h, ..]);
                let kh = k.slice(s![b, .., h, ..]);
                let vh = v.slice(s![b, .., h, ..]);
                let oh = out.slice(s![b, .., h, ..]);
                let doh = dout.slice(s![b, .., h, ..]);
                let keys = kh.nrows();
                // P from the saved statistics and dS = P ⊙ (dP − D), D_i = ⟨dout_i, out_i⟩ =
                // Σ_j P_ij dP_ij, one block of queries at a time over the keys it sees; masked
                // entries stay exactly zero.
                let (mut p, mut ds) = (Array2::<F>::zeros((seq, keys)), Array2::<F>::zeros((seq, keys)));
                let mut gq = Array2::<F>::zeros((seq, qh.ncols()));
                for (r0, r1) in query_blocks(seq) {
                    let seen_keys = q_offset + r1;
                    let scores = product(qh.slice(s![r0..r1, ..]), kh.slice(s![..seen_keys, ..]).t());
                    let dp = product(doh.slice(s![r0..r1, ..]), vh.slice(s![..seen_keys, ..]).t());
                    for i in r0..r1 {
                        let visible = q_offset + i + 1;
                        let (m, d) = (lse[[b, h, i]], doh.row(i).dot(&oh.row(i)));
                        let row = scores.slice(s![i - r0, ..visible]);
                        let mut p_row = p.slice_mut(s![i, ..visible]);
                        Zip::from(&mut p_row).and(row).for_each(|p, &x| *p = (x * scale - m).exp());
                        Zip::from(ds.slice_mut(s![i, ..visible]))
                            .and(&p_row)
                            .and(dp.slice(s![i - r0, ..visible]))
                            .for_each(|x, &p, &g| *x = p * (g - d) * scale);
                    }
                    gq.slice_mut(s![r0..r1, ..])
                        .assign(&product(ds.slice(s![r0..r1, ..seen_keys]), kh.slice(s![..seen_keys, ..])));
                }
                // dK = dSᵀ Q and dV = Pᵀ dout, one block of keys at a time over the queries that see it.
                let (mut gk, mut gv) = (Array2::<F>::zeros(kh.raw_dim()), Array2::<F>::zeros(vh.raw_dim()));
                for (c0, c1) in query_blocks(keys) {
                    let first = c0.saturating_sub(q_offset);
                    if first >= seq {
                        break; // no query sees these keys
                    }
                    let (ds_cols, p_cols) = (ds.slice(s![first.., c0..c1]), p.slice(s![first.., c0..c1]));
                    gk.slice_mut(s![c0..c1, ..]).assign(&product(ds_cols.t(), qh.slice(s![first.., ..])));
                    gv.slice_mut(s![c0..c1, ..]).assign(&product(p_cols.t(), doh.slice(s![first.., ..])));
                }
                (gq, gk, gv)
            })
            .collect();
        let mut dq = ArrayD::<F>::zeros(q.raw_dim());
        let mut dk = ArrayD::<F>::zeros(k.raw_dim());
        let mut dv = ArrayD::<F>::zeros(v.raw_dim());
        for (bh, (gq, gk, gv)) in per_pair.into_iter().enumerate() {
            let (b, h) = (bh / heads, bh % heads);
            dq.slice_mut(s![b, .., h, ..]).assign(&gq);
            dk.slice_mut(s![b, .., h, ..]).assign(&gk);
            dv.slice_mut(s![b, .., h, ..]).assign(&gv);
        }
        Ok((dq, dk, dv))
    }
}

/// Queries (or keys) in blocks of this many: each block of queries multiplies only the
/// keys it can see, so a causal product skips most of its masked half.
const BLOCK: usize = 64;

/// `[r0, r1)` blocks of `0..n`, [`BLOCK`] long (the last shorter).
fn query_blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(BLOCK).map(move |r0| (r0, (r0 + BLOCK).min(n)))
}

fn check<F>(q: &ArrayD<F>, k: &ArrayD<F>, v: &ArrayD<F>, q_offset: usize) -> Result<[usize; 5]> {
    let (&[batch, seq, heads, dk], &[kb, keys, kh, dk2], &[vb, vt, vh, dv]) = (q.shape(), k.shape(), v.shape()) else {
        return Err(shape_err("attention", "q, k, v must be rank 4"));
    };
    if (kb, kh, dk2) != (batch, heads, dk) || (vb, vt, vh) != (batch, keys, heads) || q_offset + seq > keys {
        return Err(shape_err(
            "attention",
            format!("q {:?}, k {:?}, v {:?}, offset {q_offset}", q.shape(), k.shape(), v.shape()),
        ));
    }
    Ok([batch, seq, heads, keys, dv])
}
