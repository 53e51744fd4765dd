//! MLA for training: the naive path (per-head keys and values materialised, eqs. 1–11)
//! with its saved activations, and the hand-written backward right below.

use super::{Mla, Projections, Rope};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::params::{MlaParams, QueryParams};

/// What [`Mla::forward_train`] keeps. B batch, S positions, H heads, D width, C latent,
/// dn/dr/dv the no-rope, rope and value head widths, r the query latent.
#[derive(Debug, Clone)]
pub struct MlaSaved<T> {
    /// Input `[B, S, D]` (already normalised by the block).
    pub x: T,
    /// Low-rank queries only: `wq_a x` `[B, S, r]`, its reciprocal RMS `[B, S]` and
    /// `q_norm(wq_a x)` `[B, S, r]` (eq. 6).
    pub q_latent: Option<(T, T, T)>,
    /// `wkv_a x` up to C: the un-normalised latent `c_kv` `[B, S, C]` (eq. 1) and its rstd `[B, S]`.
    pub kv_c: T,
    pub kv_rstd: T,
    /// `kv_norm(c_kv)` `[B, S, C]`.
    pub kv_latent: T,
    /// Queries `[q^C; RoPE(q^R)]` `[B, S, H, dn + dr]` (eq. 9).
    pub q: T,
    /// Keys `[k^C; RoPE(k^R)]` `[B, S, H, dn + dr]` (eq. 4).
    pub k: T,
    /// Values `[B, S, H, dv]` (eq. 5).
    pub v: T,
    /// Attention output `[B, S, H, dv]` and its log-sum-exp `[B, H, S]` (eq. 10).
    pub out: T,
    pub lse: T,
}

impl<B: Backend> Mla<'_, B> {
    /// MLA on normalised `x [B, S, D]` at positions `0..S`: `(y [B, S, D], saved)` (eq. 11).
    pub fn forward_train(&self, x: &B::Tensor) -> Result<(B::Tensor, MlaSaved<B::Tensor>)> {
        let Mla { b, cfg, p, .. } = *self;
        let [bsz, seq, _] = b.shape(x)[..] else { unreachable!("MLA input is [B, S, D]") };
        let (h, dv) = (cfg.n_heads, cfg.v_head_dim);
        let proj = self.project(x, 0)?;
        let (q, k, v) = self.naive_qkv(&proj)?;
        let Projections { q_latent, kv_c, kv_rstd, kv_latent, .. } = proj;

        let (out, lse) = b.attention_forward(&q, &k, &v, cfg.softmax_scale(), 0)?;
        let y = b.linear(&b.reshape(&out, &[bsz, seq, h * dv])?, &p.wo)?;
        Ok((y, MlaSaved { x: x.clone(), q_latent, kv_c, kv_rstd, kv_latent, q, k, v, out, lse }))
    }

    /// Backward of [`Mla::forward_train`]: `(dx [B, S, D], grads)`.
    pub fn backward(&self, dy: &B::Tensor, s: &MlaSaved<B::Tensor>) -> Result<(B::Tensor, MlaParams<B::Tensor>)> {
        let Mla { b, cfg, p, rope: Rope { cos, sin } } = *self;
        let [bsz, seq, _] = b.shape(&s.x)[..] else { unreachable!("MLA input is [B, S, D]") };
        let (h, dn, dr, dv) = (cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);

        let out_flat = b.reshape(&s.out, &[bsz, seq, h * dv])?;
        let (dout, wo) = b.linear_backward(&out_flat, &p.wo, dy)?;
        let dout = b.reshape(&dout, &[bsz, seq, h, dv])?;
        let (dq, dk, dvv) = b.attention_backward(&s.q, &s.k, &s.v, &s.out, &s.lse, &dout, cfg.softmax_scale(), 0)?;

        // Keys and values: k^R is shared by the heads (expand → sum), then un-rotated.
        let dk_pe = b.rope_backward(&b.sum_axis(&b.narrow(&dk, 3, dn, dr)?, 2)?, cos, sin, 0)?;
        let dkv_b = b.reshape(&b.concat(&[&b.narrow(&dk, 3, 0, dn)?, &dvv], 3)?, &[bsz, seq, h * (dn + dv)])?;
        let (dkv_latent, wkv_b) = b.linear_backward(&s.kv_latent, &p.wkv_b, &dkv_b)?;
        let (dkv_c, kv_norm) = b.rms_norm_backward(&s.kv_c, &p.kv_norm, &s.kv_rstd, &dkv_latent)?;
        let dkv = b.concat(&[&dkv_c, &b.reshape(&dk_pe, &[bsz, seq, dr])?], 2)?;
        let (dx_kv, wkv_a) = b.linear_backward(&s.x, &p.wkv_a, &dkv)?;

        // Queries.
        let dq_pe = b.rope_backward(&b.narrow(&dq, 3, dn, dr)?, cos, sin, 0)?;
        let dq = b.reshape(&b.concat(&[&b.narrow(&dq, 3, 0, dn)?, &dq_pe], 3)?, &[bsz, seq, h * (dn + dr)])?;
        let (dx_q, query) = match (&p.query, &s.q_latent) {
            (QueryParams::LowRank { wq_a, q_norm, wq_b }, Some((qa, rstd, qn))) => {
                let (dqn, wq_b) = b.linear_backward(qn, wq_b, &dq)?;
                let (dqa, q_norm) = b.rms_norm_backward(qa, q_norm, rstd, &dqn)?;
                let (dx, wq_a) = b.linear_backward(&s.x, wq_a, &dqa)?;
                (dx, QueryParams::LowRank { wq_a, q_norm, wq_b })
            }
            (QueryParams::Full { wq }, None) => {
                let (dx, wq) = b.linear_backward(&s.x, wq, &dq)?;
                (dx, QueryParams::Full { wq })
            }
            _ => return Err(crate::Error::Input("MLA saved activations do not match the query layout".into())),
        };
        Ok((b.add(&dx_kv, &dx_q)?, MlaParams { query, wkv_a, kv_norm, wkv_b, wo }))
    }
}
