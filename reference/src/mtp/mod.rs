//! Multi-Token Prediction (DeepSeek-V3 §2.2, eqs. 21–25; Gloeckle et al. 2024), of any
//! depth D. Module k (1-based) predicts the token k+1 ahead of position i:
//!
//! - `h'^k_i = M_k [RMSNorm(Emb(t_{i+k})); RMSNorm(h^{k-1}_i)]` (eq. 21; embedding first,
//!   as the released `eh_proj` weights are laid out),
//! - `h^k_{1:T−k} = TRM_k(h'^k_{1:T−k})` (eq. 22): one decoder block over positions
//!   `0..S−k`, with the main model's rotary table,
//! - `P^k = OutHead(norm_k(h^k))` (eq. 23): its own final norm (`shared_head.norm`) and the
//!   shared output head (or the module's own copy when the checkpoint has one),
//! - `L^k = CE(P^k_{0..S−k−1}, t_{k+1..S})` (eq. 24); the objective adds `λ/D Σ_k L^k` (eq. 25).
//!
//! | eq. | what | where |
//! |---|---|---|
//! | 21 | `h'^k = M_k [RMSNorm(Emb(t_{i+k})); RMSNorm(h^{k−1})]` | `input`, in `module_forward` |
//! | 22 | `h^k = TRM_k(h'^k)` | [`block_forward`] in `module_forward`: the one forward of a module, which [`forward_train`] runs saving and [`forward_cached`] over its cache |
//! | 23 | `P^k = OutHead(h^k)` | `module_forward` (`shared_head.norm`), then the head in [`forward_train`] (every position) or [`forward_cached`] (the last) |
//! | 24, 25 | `L^k = CE(P^k, t_{k+1..})`, `L_MTP = λ/D Σ_k L^k` | `train::objective::forward` (with the main loss and the balance loss) |
//! | | backward of 21–23 | [`backward`] |
//! | §5.4.3 | speculative decoding with the modules | [`speculative`] |
//!
//! h^0 is the main model's hidden state after its final norm (as the goldens define it);
//! for k ≥ 1 the state handed on, h^k, is likewise the one module k feeds its head (after
//! its own norm), so every depth sees its predecessor exactly as its head does. The modules
//! are dropped at evaluation (the main model's logits never depend on them).

pub mod speculative;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::fp8::LinearRole;
use crate::mla::{LayerCache, Step};
use crate::model::block_forward;
use crate::model::train::{block_backward, BlockSaved};
use crate::model::Transformer;
use crate::params::{MtpParams, Params};

/// What [`forward_train`] keeps for module k; `S_k = S − k` positions, every tensor
/// `[B, S_k, D]` unless said otherwise.
#[derive(Debug, Clone)]
pub struct MtpSaved<B: Backend> {
    /// k (1-based).
    pub depth: usize,
    /// Positions of the previous depth's state `S − k + 1`.
    pub prev_len: usize,
    /// `t_{i+k}` `[B, S_k]`.
    pub tokens: B::Indices,
    /// `Emb(t_{i+k})` and its reciprocal RMS `[B, S_k]`.
    pub emb: B::Tensor,
    pub emb_rstd: B::Tensor,
    /// `h^{k−1}` on the first `S_k` positions and its reciprocal RMS `[B, S_k]`.
    pub h_prev: B::Tensor,
    pub h_rstd: B::Tensor,
    /// `[enorm(emb); hnorm(h)]` `[B, S_k, 2D]`.
    pub cat: B::Tensor,
    pub block: BlockSaved<B>,
    /// The block's output (before `shared_head.norm`) and that norm's rstd `[B, S_k]`.
    pub block_out: B::Tensor,
    pub head_rstd: B::Tensor,
    /// `h^k`: after `shared_head.norm`, what the head reads.
    pub hidden: B::Tensor,
}

/// `t[:, start..start + len]` of `tokens [B, S]` (on the host: indices are small).
pub fn token_window<B: Backend>(b: &B, tokens: &B::Indices, start: usize, len: usize) -> Result<B::Indices> {
    let host = b.download_indices(tokens)?;
    if host.ndim() != 2 || start + len > host.shape()[1] {
        return Err(Error::Input(format!("positions {start}..{} of tokens {:?}", start + len, host.shape())));
    }
    b.upload_indices(host.slice_axis(ndarray::Axis(1), (start..start + len).into()).into_dyn())
}

/// The embedding and head module k uses: its own copies, or the main model's.
fn embed_head<'a, T>(params: &'a Params<T>, p: &'a MtpParams<T>) -> (&'a T, &'a T) {
    (p.embed.as_ref().unwrap_or(&params.embed), p.head.as_ref().unwrap_or(&params.head))
}

/// Eq. 21 for module `p`: `M_k [enorm(Emb(t)); hnorm(h)]` with what its backward needs.
struct Input<T> {
    emb: T,
    emb_rstd: T,
    h_rstd: T,
    cat: T,
    /// `h'^k`, the block's input.
    projected: T,
}

/// Eq. 21 on the tokens `t_{i+k}` `[B, S_k]` and states `h^{k−1}_i` `[B, S_k, D]`.
fn input<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    p: &MtpParams<B::Tensor>,
    tokens: &B::Indices,
    h_prev: &B::Tensor,
) -> Result<Input<B::Tensor>> {
    let eps = model.cfg.rms_norm_eps;
    let (embed, _) = embed_head(&model.params, p);
    let emb = b.embedding_forward(embed, tokens)?;
    let (e_norm, emb_rstd) = b.rms_norm_forward(&emb, &p.enorm, eps)?;
    let (h_norm, h_rstd) = b.rms_norm_forward(h_prev, &p.hnorm, eps)?;
    let cat = b.concat(&[&e_norm, &h_norm], 2)?;
    let projected = b.linear_mixed(&cat, &p.eh_proj, &model.cfg.precision.linear(LinearRole::Plain))?;
    Ok(Input { emb, emb_rstd, h_rstd, cat, projected })
}

/// Eqs. 21–23 for module `p` on the tokens `t_{i+k}` `[B, n]` and the states `h^{k−1}_i`
/// `[B, n, D]`, its block run as `step` says: the one forward of an MTP module, for
/// training ([`forward_train`]) and decoding ([`forward_cached`]) alike.
fn module_forward<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    p: &MtpParams<B::Tensor>,
    tokens: &B::Indices,
    h_prev: &B::Tensor,
    step: Step<'_, B::Tensor>,
) -> Result<ModuleRun<B>> {
    let input = input(b, model, p, tokens, h_prev)?;
    let (block_out, _, block) = block_forward(b, &model.cfg, &model.rope(), &p.block, &input.projected, step)?;
    let (hidden, head_rstd) = b.rms_norm_forward(&block_out, &p.head_norm, model.cfg.rms_norm_eps)?;
    Ok(ModuleRun { input, block_out, block, hidden, head_rstd })
}

/// What [`module_forward`] computes: the input (eq. 21), the block's output and saved state
/// (eq. 22, saved only when asked), `h^k` after `shared_head.norm` and that norm's rstd.
struct ModuleRun<B: Backend> {
    input: Input<B::Tensor>,
    block_out: B::Tensor,
    block: Option<BlockSaved<B>>,
    hidden: B::Tensor,
    head_rstd: B::Tensor,
}

/// Module `depth` for decoding (eqs. 21–23 at positions `start..start + n`): `tokens`
/// holds `t_{i+depth}` `[B, n]` and `h_prev` the states `h^{depth−1}_i` `[B, n, D]`; the
/// block reads earlier positions from `cache` (naive or latent, as it was made) and
/// appends these. Returns `h^depth` `[B, n, D]` and the logits of the last position only,
/// `[B, 1, V]` (the draft: earlier positions are computed for the cache and the next module).
pub fn forward_cached<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    depth: usize,
    tokens: &B::Indices,
    h_prev: &B::Tensor,
    start: usize,
    cache: &mut LayerCache<B::Tensor>,
) -> Result<(B::Tensor, B::Tensor)> {
    let p = module(model, depth)?;
    let attention = cache.attention();
    let run = module_forward(b, model, p, tokens, h_prev, Step::infer(start, Some(cache), attention))?;
    let n = b.shape(&run.hidden)[1];
    let logits = b.linear(&b.narrow(&run.hidden, 1, n - 1, 1)?, embed_head(&model.params, p).1)?;
    Ok((run.hidden, logits))
}

fn module<B: Backend>(model: &Transformer<B>, depth: usize) -> Result<&MtpParams<B::Tensor>> {
    model
        .params
        .mtp
        .get(depth.wrapping_sub(1))
        .ok_or_else(|| Error::Input(format!("MTP depth {depth} but the model has {} modules", model.params.mtp.len())))
}

/// Module `depth` (1-based) on `tokens [B, S]` and the previous depth's state
/// `h_prev [B, S − depth + 1, D]`: `(logits [B, S − depth, V], saved)`; `saved.hidden` is
/// h^depth for the next module.
pub fn forward_train<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    depth: usize,
    tokens: &B::Indices,
    h_prev: &B::Tensor,
) -> Result<(B::Tensor, MtpSaved<B>)> {
    let p = module(model, depth)?;
    let prev_len = b.shape(h_prev)[1];
    let len =
        prev_len.checked_sub(1).filter(|&l| l > 0).ok_or_else(|| Error::Input("sequence too short for MTP".into()))?;
    let tokens = token_window(b, tokens, depth, len)?;
    let h_prev = b.narrow(h_prev, 1, 0, len)?;
    let ModuleRun { input, block_out, block, hidden, head_rstd } =
        module_forward(b, model, p, &tokens, &h_prev, Step::train())?;
    let logits = b.linear(&hidden, embed_head(&model.params, p).1)?;
    let Input { emb, emb_rstd, h_rstd, cat, .. } = input;
    let block = block.expect("a training step saves");
    let saved =
        MtpSaved { depth, prev_len, tokens, emb, emb_rstd, h_prev, h_rstd, cat, block, block_out, head_rstd, hidden };
    Ok((logits, saved))
}

/// Gradients out of module k's backward.
#[derive(Debug, Clone)]
pub struct MtpGrads<T> {
    /// `d h^{k−1}` `[B, S − k + 1, D]` (zero on the last position, which module k never reads).
    pub d_h_prev: T,
    /// The module's own tensors (`embed`/`head` present iff the module has its own).
    pub params: MtpParams<T>,
    /// Contributions to the main model's embedding and head when they are shared.
    pub shared_embed: Option<T>,
    pub shared_head: Option<T>,
}

/// Backward of [`forward_train`] from `d_logits [B, S_k, V]` and the gradient on h^k from
/// the next module (if any); `d_scores` adds to the block's gate scores (balance loss).
pub fn backward<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    d_logits: &B::Tensor,
    d_hidden: Option<&B::Tensor>,
    s: &MtpSaved<B>,
    d_scores: Option<&B::Tensor>,
) -> Result<MtpGrads<B::Tensor>> {
    let p = &model.params.mtp[s.depth - 1];
    let (_, head) = embed_head(&model.params, p);
    let (mut d_hidden_total, d_head) = b.linear_backward(&s.hidden, head, d_logits)?;
    if let Some(extra) = d_hidden {
        d_hidden_total = b.add(&d_hidden_total, extra)?;
    }
    let (d_block_out, d_head_norm) = b.rms_norm_backward(&s.block_out, &p.head_norm, &s.head_rstd, &d_hidden_total)?;
    let (d_projected, d_block) =
        block_backward(b, &model.cfg, &model.rope(), &p.block, &d_block_out, &s.block, d_scores)?;
    let precision = model.cfg.precision.linear(LinearRole::Plain);
    let (d_cat, d_eh_proj) = b.linear_backward_mixed(&s.cat, &p.eh_proj, &d_projected, &precision)?;
    let d = model.cfg.dim;
    let (d_e_normed, d_h_normed) = (b.narrow(&d_cat, 2, 0, d)?, b.narrow(&d_cat, 2, d, d)?);
    let (d_emb, d_enorm) = b.rms_norm_backward(&s.emb, &p.enorm, &s.emb_rstd, &d_e_normed)?;
    let (d_h, d_hnorm) = b.rms_norm_backward(&s.h_prev, &p.hnorm, &s.h_rstd, &d_h_normed)?;
    let bsz = b.shape(&d_h)[0];
    let d_h_prev = b.concat(&[&d_h, &b.zeros(&[bsz, s.prev_len - b.shape(&d_h)[1], d])?], 1)?;
    let d_embed = b.embedding_backward(&s.tokens, &d_emb, model.cfg.vocab_size)?;
    let (d_own_embed, d_shared_embed) = if p.embed.is_some() { (Some(d_embed), None) } else { (None, Some(d_embed)) };
    let (d_own_head, d_shared_head) = if p.head.is_some() { (Some(d_head), None) } else { (None, Some(d_head)) };
    let params = MtpParams {
        enorm: d_enorm,
        hnorm: d_hnorm,
        eh_proj: d_eh_proj,
        block: d_block,
        head_norm: d_head_norm,
        embed: d_own_embed,
        head: d_own_head,
    };
    Ok(MtpGrads { d_h_prev, params, shared_embed: d_shared_embed, shared_head: d_shared_head })
}

/// Logits of every MTP module for `tokens [B, S]` (no gradients): depth k's logits are
/// `[B, S − k, V]`, predicting `t_{i+k+1}` at position i.
pub fn forward<B: Backend>(b: &B, model: &Transformer<B>, tokens: &B::Indices, depth: usize) -> Result<Vec<B::Tensor>> {
    let (_, saved) = model.forward_train(b, tokens)?;
    let mut h = saved.final_hidden;
    let mut out = Vec::with_capacity(depth);
    for k in 1..=depth {
        let (logits, s) = forward_train(b, model, k, tokens, &h)?;
        h = s.hidden;
        out.push(logits);
    }
    Ok(out)
}
