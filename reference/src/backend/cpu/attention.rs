//! Causal softmax attention on the CPU (the naive path MLA trains with), forward and
//! backward, one (batch, head) pair per rayon task.

use super::product::product;
use super::{shape_err, Cpu, CpuFloat};
use crate::backend::AttentionOps;
use crate::error::Result;
use ndarray::{s, Array2, ArrayD, IxDyn};
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
            let mut scores = product(qh, kh.t()) * scale;
            let mut lse = Vec::with_capacity(seq);
            for (i, mut row) in scores.outer_iter_mut().enumerate() {
                let visible = q_offset + i + 1;
                row.slice_mut(s![visible..]).fill(F::zero());
                let max = row.slice(s![..visible]).iter().copied().fold(F::neg_infinity(), F::max);
                let mut sum = F::zero();
                for p in row.slice_mut(s![..visible]).iter_mut() {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                row.mapv_inplace(|p| p / sum);
                lse.push(max + sum.ln());
            }
            (product(scores.view(), vh), lse)
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
                // P from the saved statistics; masked entries are exactly zero.
                let mut p = product(qh, kh.t()) * scale;
                for (i, mut row) in p.outer_iter_mut().enumerate() {
                    let visible = q_offset + i + 1;
                    let m = lse[[b, h, i]];
                    row.slice_mut(s![..visible]).mapv_inplace(|x| (x - m).exp());
                    row.slice_mut(s![visible..]).fill(F::zero());
                }
                let dv = product(p.t(), doh);
                let dp = product(doh, vh.t());
                // dS = P ⊙ (dP − D), D_i = ⟨dout_i, out_i⟩ = Σ_j P_ij dP_ij.
                let mut ds = p;
                for (i, mut row) in ds.outer_iter_mut().enumerate() {
                    let d: F = doh.row(i).dot(&oh.row(i));
                    for (x, &g) in row.iter_mut().zip(dp.row(i)) {
                        *x = *x * (g - d) * scale;
                    }
                }
                (product(ds.view(), kh), product(ds.t(), qh), dv)
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
