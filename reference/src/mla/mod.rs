//! Multi-head Latent Attention (DeepSeek-V3 §2.1.1, eqs. 1–11; the public code's `MLA`).
//!
//! Keys and values come from one compressed latent `c_kv = W_DKV h` (eq. 1) of width C,
//! normalised, then expanded per head by `W_UK`, `W_UV` (eqs. 2, 5); queries from a
//! low-rank latent `c_q = W_DQ h` (eqs. 6–7) or one projection. A decoupled rotary part of
//! width R (`k^R` shared by all heads, eq. 3; `q^R` per head, eq. 8) carries position.
//!
//! | eq. | what | where |
//! |---|---|---|
//! | 1 | `c^KV = W^DKV h` | [`Mla::project`] (`wkv_a`, first C outputs), then `kv_norm` |
//! | 2, 5 | `k^C = W^UK c^KV`, `v^C = W^UV c^KV` | `Mla::naive_qkv` (`wkv_b`); absorbed: `split_wkv_b`, `per_head` |
//! | 3 | `k^R = RoPE(W^KR h)`, shared by the heads | [`Mla::project`] (`wkv_a`, last R outputs), [`rope`] |
//! | 4, 9 | `k = [k^C; k^R]`, `q = [q^C; q^R]` | `Mla::naive_qkv` |
//! | 6, 7 | `c^Q = W^DQ h`, `q^C = W^UQ c^Q` | [`Mla::project`] (`wq_a`, `q_norm`, `wq_b`; or one `wq`) |
//! | 8 | `q^R = RoPE(W^QR c^Q)` | [`Mla::project`] |
//! | 10 | `softmax(q·k / √(d_h + d_h^R)) v` | `Backend::attention_forward` (naive), `Backend::latent_attention_forward` (absorbed); the scale is [`ModelConfig::softmax_scale`] |
//! | 11 | `u = W^O [o_1; …; o_H]` | [`Mla::forward`] (`wo`) |
//! | | backward of 1–11 (naive) | [`Mla::backward`](train) in `train.rs` |
//!
//! Two equivalent ways to attend, a value of [`AttentionImpl`]:
//! - `Naive`: materialise per-head keys and values (what training differentiates);
//! - `Absorbed`: fold `W_UK` into the query and apply `W_UV` after attending, so the cache
//!   holds only `kv_norm(c_kv)` and `k^R`: C + R values per token and layer.

pub mod rope;
pub mod train;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::fp8::LinearRole;
use crate::params::{MlaParams, QueryParams};
pub use rope::Rope;
use train::MlaSaved;

/// One MLA layer as every function of this module sees it: the backend, the model's config,
/// the layer's weights and the rotary table. One forward ([`Mla::forward`], for inference
/// and training alike) and the backward ([`Mla::backward`]) are methods of it.
pub struct Mla<'a, B: Backend> {
    pub b: &'a B,
    pub cfg: &'a ModelConfig,
    pub p: &'a MlaParams<B::Tensor>,
    pub rope: Rope<'a, B::Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionImpl {
    Naive,
    #[default]
    Absorbed,
}

/// Values cached per token and layer (§2.1.1: "only the blue-boxed vectors need to be cached").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheValues {
    /// MLA's absorbed cache: `kv_norm(c_kv)` and `k^R`, `d_c + d_h^R`.
    pub latent: usize,
    /// The paper's multi-head-attention baseline, `2 n_h d_h` (keys and values of every head).
    pub mha: usize,
    /// This model's naive cache: per-head keys `d_nope + d_rope` and values `d_v`.
    pub naive: usize,
}

impl CacheValues {
    pub fn of(cfg: &ModelConfig) -> Self {
        CacheValues {
            latent: cfg.kv_lora_rank + cfg.qk_rope_head_dim,
            mha: 2 * cfg.n_heads * cfg.v_head_dim,
            naive: cfg.n_heads * (cfg.qk_head_dim() + cfg.v_head_dim),
        }
    }
}

/// One layer's decoding cache, preallocated for `max_len` positions.
#[derive(Debug, Clone)]
pub enum LayerCache<T> {
    /// Per-head keys `[B, T, H, d_nope + R]` and values `[B, T, H, d_v]`.
    Naive { k: T, v: T },
    /// `kv_norm(c_kv)` `[B, T, C]` and the rotated shared key `k^R` `[B, T, R]`.
    Latent { kv_latent: T, k_pe: T },
}

impl<T> LayerCache<T> {
    pub fn new<B: Backend<Tensor = T>>(
        b: &B,
        cfg: &ModelConfig,
        imp: AttentionImpl,
        batch: usize,
        max_len: usize,
    ) -> Result<Self> {
        Ok(match imp {
            AttentionImpl::Naive => LayerCache::Naive {
                k: b.zeros(&[batch, max_len, cfg.n_heads, cfg.qk_head_dim()])?,
                v: b.zeros(&[batch, max_len, cfg.n_heads, cfg.v_head_dim])?,
            },
            AttentionImpl::Absorbed => LayerCache::Latent {
                kv_latent: b.zeros(&[batch, max_len, cfg.kv_lora_rank])?,
                k_pe: b.zeros(&[batch, max_len, cfg.qk_rope_head_dim])?,
            },
        })
    }
}

impl<T> LayerCache<T> {
    /// The attention that reads this cache.
    pub fn attention(&self) -> AttentionImpl {
        match self {
            LayerCache::Naive { .. } => AttentionImpl::Naive,
            LayerCache::Latent { .. } => AttentionImpl::Absorbed,
        }
    }

    /// Writes this step's pair (keys and values, or latent and `k^R`) at `start` along
    /// axis 1 of a cache of `imp`'s kind, and returns the pair for positions `0..start+len`.
    fn append<B: Backend<Tensor = T>>(
        &mut self,
        b: &B,
        imp: AttentionImpl,
        (first, second): (&T, &T),
        start: usize,
    ) -> Result<(T, T)> {
        let (c1, c2) = match (self, imp) {
            (LayerCache::Naive { k, v }, AttentionImpl::Naive) => (k, v),
            (LayerCache::Latent { kv_latent, k_pe }, AttentionImpl::Absorbed) => (kv_latent, k_pe),
            (cache, imp) => {
                let kind = if matches!(cache, LayerCache::Naive { .. }) { "naive" } else { "latent" };
                return Err(crate::Error::Input(format!("{imp:?} attention with a {kind} cache")));
            }
        };
        let len = start + b.shape(first)[1];
        b.write_at(c1, first, 1, start)?;
        b.write_at(c2, second, 1, start)?;
        Ok((b.narrow(c1, 1, 0, len)?, b.narrow(c2, 1, 0, len)?))
    }
}

/// Per-head slices of `kv_b_proj` `[H·(d_nope + d_v), C]`: `W_UK [H, d_nope, C]` and `W_UV [H, d_v, C]`.
fn split_wkv_b<B: Backend>(b: &B, cfg: &ModelConfig, wkv_b: &B::Tensor) -> Result<(B::Tensor, B::Tensor)> {
    let (dn, dv) = (cfg.qk_nope_head_dim, cfg.v_head_dim);
    let w = b.reshape(wkv_b, &[cfg.n_heads, dn + dv, cfg.kv_lora_rank])?;
    Ok((b.narrow(&w, 1, 0, dn)?, b.narrow(&w, 1, dn, dv)?))
}

/// `x [B, S, H, F]` through per-head matrices `w [H, ·, ·]`: `[B, S, H, F']`
/// (`einsum("bshd,hdc->bshc")`, or with `w` transposed).
fn per_head<B: Backend>(b: &B, x: &B::Tensor, w: &B::Tensor, trans_w: bool) -> Result<B::Tensor> {
    let [bsz, seq, heads, width] = b.shape(x)[..] else { unreachable!("per-head operands are rank 4") };
    let x = b.reshape(&b.permute(x, &[2, 0, 1, 3])?, &[heads, bsz * seq, width])?;
    let y = b.matmul(&x, w, false, trans_w)?;
    let out = b.shape(&y)[2];
    b.permute(&b.reshape(&y, &[heads, bsz, seq, out])?, &[1, 2, 0, 3])
}

/// The projections MLA attends with (eqs. 1–8), and what a backward needs of them.
#[derive(Debug, Clone)]
pub struct Projections<T> {
    /// `q^C` `[B, S, H, d_nope]` (eq. 7).
    pub q_nope: T,
    /// `RoPE(q^R)` `[B, S, H, R]` (eq. 8).
    pub q_pe: T,
    /// Low-rank queries only: `wq_a x` `[B, S, r]`, its reciprocal RMS `[B, S]` and
    /// `q_norm(wq_a x)` `[B, S, r]` (eq. 6).
    pub q_latent: Option<(T, T, T)>,
    /// The un-normalised latent `c_kv` `[B, S, C]` (eq. 1) and its reciprocal RMS `[B, S]`.
    pub kv_c: T,
    pub kv_rstd: T,
    /// `kv_norm(c_kv)` `[B, S, C]`: what the absorbed cache holds.
    pub kv_latent: T,
    /// `RoPE(k^R)` `[B, S, 1, R]`, shared by every head (eq. 3).
    pub k_pe: T,
}

impl<B: Backend> Mla<'_, B> {
    /// Queries and the compressed keys/values of normalised `x [B, S, D]` at positions
    /// `start_pos..`: the part of MLA that inference and training share.
    pub fn project(&self, x: &B::Tensor, start_pos: usize) -> Result<Projections<B::Tensor>> {
        let Mla { b, cfg, p, rope: Rope { cos, sin } } = *self;
        let [bsz, seq, _] = b.shape(x)[..] else { unreachable!("MLA input is [B, S, D]") };
        let (h, dn, dr, c) = (cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.kv_lora_rank);
        let eps = cfg.rms_norm_eps;
        let precision = cfg.precision.linear(LinearRole::Plain);
        let linear = |x: &B::Tensor, w: &B::Tensor| b.linear_mixed(x, w, &precision);
        let (q, q_latent) = match &p.query {
            QueryParams::LowRank { wq_a, q_norm, wq_b } => {
                let qa = linear(x, wq_a)?;
                let (qn, rstd) = b.rms_norm_forward(&qa, q_norm, eps)?;
                (linear(&qn, wq_b)?, Some((qa, rstd, qn)))
            }
            QueryParams::Full { wq } => (linear(x, wq)?, None),
        };
        let q = b.reshape(&q, &[bsz, seq, h, dn + dr])?;
        let q_pe = b.rope_forward(&b.narrow(&q, 3, dn, dr)?, cos, sin, start_pos)?;
        let kv = linear(x, &p.wkv_a)?;
        let kv_c = b.narrow(&kv, 2, 0, c)?;
        let (kv_latent, kv_rstd) = b.rms_norm_forward(&kv_c, &p.kv_norm, eps)?;
        let k_pe = b.rope_forward(&b.reshape(&b.narrow(&kv, 2, c, dr)?, &[bsz, seq, 1, dr])?, cos, sin, start_pos)?;
        Ok(Projections { q_nope: b.narrow(&q, 3, 0, dn)?, q_pe, q_latent, kv_c, kv_rstd, kv_latent, k_pe })
    }

    /// The per-head queries `[q^C; q^R]`, keys `[k^C; RoPE(k^R)]` and values of the naive
    /// (unabsorbed) form, eqs. 4, 5 and 9: `(q, k, v)`, `[B, S, H, ·]`.
    fn naive_qkv(&self, proj: &Projections<B::Tensor>) -> Result<(B::Tensor, B::Tensor, B::Tensor)> {
        let Mla { b, cfg, p, .. } = *self;
        let [bsz, seq, _] = b.shape(&proj.kv_latent)[..] else { unreachable!("the latent is [B, S, C]") };
        let (h, dn, dv) = (cfg.n_heads, cfg.qk_nope_head_dim, cfg.v_head_dim);
        let kv_b = b.linear_mixed(&proj.kv_latent, &p.wkv_b, &cfg.precision.linear(LinearRole::Plain))?;
        let kv_b = b.reshape(&kv_b, &[bsz, seq, h, dn + dv])?;
        let k = b.concat(&[&b.narrow(&kv_b, 3, 0, dn)?, &b.expand(&proj.k_pe, 2, h)?], 3)?;
        let v = b.narrow(&kv_b, 3, dn, dv)?;
        let q = b.concat(&[&proj.q_nope, &proj.q_pe], 3)?;
        Ok((q, k, v))
    }

    /// MLA on normalised input `x [B, S, D]` (eqs. 1–11), run as `step` says: at positions
    /// `start_pos..`, reading earlier positions from the cache and appending these, in either
    /// form; with `save`, what [`Mla::backward`] needs is kept (the naive form over all
    /// positions from 0, without a cache: what training differentiates). Inference is the
    /// same function with `save` off, and keeps nothing.
    pub fn forward(&self, x: &B::Tensor, step: Step<'_, B::Tensor>) -> Result<MlaOut<B::Tensor>> {
        let Mla { b, cfg, p, .. } = *self;
        let Step { start_pos, cache, attention, save } = step;
        if save && (start_pos != 0 || cache.is_some() || attention != AttentionImpl::Naive) {
            return Err(crate::Error::Input(
                "MLA saves for its backward only in the naive form, from position 0, without a cache".into(),
            ));
        }
        let [bsz, seq, _] = b.shape(x)[..] else { unreachable!("MLA input is [B, S, D]") };
        let (h, dr, dv) = (cfg.n_heads, cfg.qk_rope_head_dim, cfg.v_head_dim);
        let proj = self.project(x, start_pos)?;
        let scale = cfg.softmax_scale();

        // Eq. 11: the heads' outputs side by side, through W^O.
        let wo_precision = cfg.precision.linear(LinearRole::AttentionOutput);
        let output = |out: &B::Tensor| b.linear_mixed(&b.reshape(out, &[bsz, seq, h * dv])?, &p.wo, &wo_precision);
        match attention {
            AttentionImpl::Naive => {
                let (q, k, v) = self.naive_qkv(&proj)?;
                let (out, lse) = match cache {
                    Some(c) => {
                        let (k, v) = c.append(b, attention, (&k, &v), start_pos)?;
                        b.attention_forward(&q, &k, &v, scale, start_pos)?
                    }
                    None => b.attention_forward(&q, &k, &v, scale, start_pos)?,
                };
                let y = output(&out)?;
                let saved = save.then(|| {
                    let Projections { q_latent, kv_c, kv_rstd, kv_latent, .. } = proj;
                    MlaSaved { x: x.clone(), q_latent, kv_c, kv_rstd, kv_latent, q, k, v, out, lse }
                });
                Ok((y, saved))
            }
            AttentionImpl::Absorbed => {
                let Projections { q_nope, q_pe, kv_latent, k_pe, .. } = proj;
                let (w_uk, w_uv) = split_wkv_b(b, cfg, &p.wkv_b)?;
                let q_latent = per_head(b, &q_nope, &w_uk, false)?;
                let k_pe = b.reshape(&k_pe, &[bsz, seq, dr])?;
                let (kv_latent, k_pe) = match cache {
                    Some(c) => c.append(b, attention, (&kv_latent, &k_pe), start_pos)?,
                    None => (kv_latent, k_pe),
                };
                let out_latent = b.latent_attention_forward(&q_latent, &q_pe, &kv_latent, &k_pe, scale, start_pos)?;
                Ok((output(&per_head(b, &out_latent, &w_uv, true)?)?, None))
            }
        }
    }
}

/// What [`Mla::forward`] returns: `y [B, S, D]` and, with `save`, what the backward needs.
pub type MlaOut<T> = (T, Option<MlaSaved<T>>);

/// How one forward of a layer runs: where its positions start, the cache it reads and
/// extends, the attention form, and whether it keeps what its backward needs.
pub struct Step<'c, T> {
    pub start_pos: usize,
    pub cache: Option<&'c mut LayerCache<T>>,
    pub attention: AttentionImpl,
    pub save: bool,
}

impl<'c, T> Step<'c, T> {
    /// Training: every position from 0, the naive form, saving for the backward.
    pub fn train() -> Self {
        Step { start_pos: 0, cache: None, attention: AttentionImpl::Naive, save: true }
    }

    /// Inference at positions `start_pos..`, through `cache` when given; nothing saved.
    pub fn infer(start_pos: usize, cache: Option<&'c mut LayerCache<T>>, attention: AttentionImpl) -> Self {
        Step { start_pos, cache, attention, save: false }
    }
}
