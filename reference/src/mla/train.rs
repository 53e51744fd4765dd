//! MLA's backward: what the forward saves in the naive form (per-head keys and values
//! materialised, eqs. 1–11), and the hand-written backward of that forward.

use super::{Mla, Rope};
use crate::backend::Backend;
use crate::error::Result;
use crate::fp8::LinearRole;
use crate::params::{MlaParams, QueryParams};

/// What [`Mla::forward`] keeps for the backward (`save` on). B batch, S positions, H heads, D width, C latent,
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
    /// Backward of [`Mla::forward`] run with [`Step::train`](super::Step::train): `(d_x [B, S, D], grads)`.
    pub fn backward(&self, d_y: &B::Tensor, s: &MlaSaved<B::Tensor>) -> Result<(B::Tensor, MlaParams<B::Tensor>)> {
        let Mla { b, cfg, p, rope: Rope { cos, sin } } = *self;
        let [bsz, seq, _] = b.shape(&s.x)[..] else { unreachable!("MLA input is [B, S, D]") };
        let (h, dn, dr, dv) = (cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);

        let precision = cfg.precision.linear(LinearRole::Plain);
        let linear_backward =
            |x: &B::Tensor, w: &B::Tensor, dy: &B::Tensor| b.linear_backward_mixed(x, w, dy, &precision);
        let out_flat = b.reshape(&s.out, &[bsz, seq, h * dv])?;
        let wo_precision = cfg.precision.linear(LinearRole::AttentionOutput);
        let (d_out, d_wo) = b.linear_backward_mixed(&out_flat, &p.wo, d_y, &wo_precision)?;
        let d_out = b.reshape(&d_out, &[bsz, seq, h, dv])?;
        let (d_q, d_k, d_v) = b.attention_backward(&s.q, &s.k, &s.v, &s.out, &s.lse, &d_out, cfg.softmax_scale(), 0)?;

        // Keys and values: k^R is shared by the heads (expand → sum), then un-rotated.
        let d_k_pe = b.rope_backward(&b.sum_axis(&b.narrow(&d_k, 3, dn, dr)?, 2)?, cos, sin, 0)?;
        let d_kv_b = b.reshape(&b.concat(&[&b.narrow(&d_k, 3, 0, dn)?, &d_v], 3)?, &[bsz, seq, h * (dn + dv)])?;
        let (d_kv_latent, d_wkv_b) = linear_backward(&s.kv_latent, &p.wkv_b, &d_kv_b)?;
        let (d_kv_c, d_kv_norm) = b.rms_norm_backward(&s.kv_c, &p.kv_norm, &s.kv_rstd, &d_kv_latent)?;
        let d_kv = b.concat(&[&d_kv_c, &b.reshape(&d_k_pe, &[bsz, seq, dr])?], 2)?;
        let (d_x_kv, d_wkv_a) = linear_backward(&s.x, &p.wkv_a, &d_kv)?;

        // Queries.
        let d_q_pe = b.rope_backward(&b.narrow(&d_q, 3, dn, dr)?, cos, sin, 0)?;
        let d_q = b.reshape(&b.concat(&[&b.narrow(&d_q, 3, 0, dn)?, &d_q_pe], 3)?, &[bsz, seq, h * (dn + dr)])?;
        let (d_x_q, d_query) = match (&p.query, &s.q_latent) {
            (QueryParams::LowRank { wq_a, q_norm, wq_b }, Some((q_a, rstd, q_normed))) => {
                let (d_q_normed, d_wq_b) = linear_backward(q_normed, wq_b, &d_q)?;
                let (d_q_a, d_q_norm) = b.rms_norm_backward(q_a, q_norm, rstd, &d_q_normed)?;
                let (d_x, d_wq_a) = linear_backward(&s.x, wq_a, &d_q_a)?;
                (d_x, QueryParams::LowRank { wq_a: d_wq_a, q_norm: d_q_norm, wq_b: d_wq_b })
            }
            (QueryParams::Full { wq }, None) => {
                let (d_x, d_wq) = linear_backward(&s.x, wq, &d_q)?;
                (d_x, QueryParams::Full { wq: d_wq })
            }
            _ => return Err(crate::Error::Input("MLA saved activations do not match the query layout".into())),
        };
        let grads = MlaParams { query: d_query, wkv_a: d_wkv_a, kv_norm: d_kv_norm, wkv_b: d_wkv_b, wo: d_wo };
        Ok((b.add(&d_x_kv, &d_x_q)?, grads))
    }
}
