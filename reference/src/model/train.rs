//! The transformer for training: forward with saved activations and the hand-written
//! backward, block by block (pre-norm residual blocks `x + MLA(norm(x))`,
//! `x + FFN(norm(x))`, then the final norm and the output head).

use super::Transformer;
use crate::backend::{Backend, Routing};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::fp8::LinearRole;
use crate::mla::{train::MlaSaved, Mla, Rope};
use crate::moe::train::{mlp_backward, moe_backward, MlpSaved, MoeSaved};
use crate::params::{BlockParams, FfnParams, Params};

/// A block's feed-forward activations.
#[derive(Debug, Clone)]
pub enum FfnSaved<B: Backend> {
    Dense(MlpSaved<B::Tensor>),
    Moe(MoeSaved<B>),
}

/// What [`block_forward`](super::block_forward) keeps for the backward; every tensor `[B, S, D]` unless said otherwise.
#[derive(Debug, Clone)]
pub struct BlockSaved<B: Backend> {
    /// Block input.
    pub x: B::Tensor,
    /// Reciprocal RMS of the attention norm `[B, S]`.
    pub attn_rstd: B::Tensor,
    pub attn: MlaSaved<B::Tensor>,
    /// `x + MLA(norm(x))`.
    pub x1: B::Tensor,
    /// Reciprocal RMS of the FFN norm `[B, S]`.
    pub ffn_rstd: B::Tensor,
    pub ffn: FfnSaved<B>,
}

impl<B: Backend> BlockSaved<B> {
    /// The routing of a MoE block (None for a dense one).
    pub fn routing(&self) -> Option<&Routing<B>> {
        match &self.ffn {
            FfnSaved::Moe(m) => Some(&m.routing),
            FfnSaved::Dense(_) => None,
        }
    }
}

/// Backward of [`block_forward`](super::block_forward) run with [`Step::train`](crate::mla::Step::train); `dscores` is an extra gradient on a MoE gate's
/// unbiased scores (balance loss). Returns `(dx, grads)`.
pub fn block_backward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    rope: &Rope<'_, B::Tensor>,
    p: &BlockParams<B::Tensor>,
    d_y: &B::Tensor,
    s: &BlockSaved<B>,
    d_scores: Option<&B::Tensor>,
) -> Result<(B::Tensor, BlockParams<B::Tensor>)> {
    let (d_ffn_in, d_ffn) = match (&p.ffn, &s.ffn) {
        (FfnParams::Dense(mlp), FfnSaved::Dense(saved)) => {
            let (d_x, d_mlp) = mlp_backward(b, &cfg.precision.linear(LinearRole::Plain), mlp, d_y, saved)?;
            (d_x, FfnParams::Dense(d_mlp))
        }
        (FfnParams::Moe(moe), FfnSaved::Moe(saved)) => {
            let (d_x, d_moe) = moe_backward(b, cfg, moe, d_y, saved, d_scores)?;
            (d_x, FfnParams::Moe(d_moe))
        }
        _ => return Err(crate::Error::Input("block activations do not match its parameters".into())),
    };
    let (d_x1_normed, d_ffn_norm) = b.rms_norm_backward(&s.x1, &p.ffn_norm, &s.ffn_rstd, &d_ffn_in)?;
    let d_x1 = b.add(d_y, &d_x1_normed)?;
    let (d_attn_in, d_attn) = Mla { b, cfg, p: &p.attn, rope: *rope }.backward(&d_x1, &s.attn)?;
    let (d_x_normed, d_attn_norm) = b.rms_norm_backward(&s.x, &p.attn_norm, &s.attn_rstd, &d_attn_in)?;
    let grads = BlockParams { attn_norm: d_attn_norm, attn: d_attn, ffn_norm: d_ffn_norm, ffn: d_ffn };
    Ok((b.add(&d_x1, &d_x_normed)?, grads))
}

/// What [`Transformer::forward_train`] keeps.
#[derive(Debug, Clone)]
pub struct ModelSaved<B: Backend> {
    /// `[B, S]`.
    pub tokens: B::Indices,
    pub blocks: Vec<BlockSaved<B>>,
    /// Last block's output, before the final norm `[B, S, D]`.
    pub hidden: B::Tensor,
    /// Reciprocal RMS of the final norm `[B, S]`.
    pub norm_rstd: B::Tensor,
    /// After the final norm `[B, S, D]`: h^0 of multi-token prediction.
    pub final_hidden: B::Tensor,
}

impl<B: Backend> Transformer<B> {
    /// The rotary table of this model.
    pub fn rope(&self) -> Rope<'_, B::Tensor> {
        Rope { cos: &self.rope_cos, sin: &self.rope_sin }
    }

    /// The forward of `tokens [B, S]` from position 0 keeping what the backward needs:
    /// `(logits [B, S, V], saved)`; `saved.final_hidden` is h^0 for the MTP modules.
    /// (The model's one driver, `Transformer::run`, with the backward's state kept.)
    pub fn forward_train(&self, b: &B, tokens: &B::Indices) -> Result<(B::Tensor, ModelSaved<B>)> {
        let keep = super::Keep { trace: false, backward: true };
        let out = self.run(b, tokens, 0, None, crate::mla::AttentionImpl::Naive, keep)?;
        let super::SavedLayers { blocks, hidden, norm_rstd } = out.saved.expect("kept");
        let saved = ModelSaved { tokens: tokens.clone(), blocks, hidden, norm_rstd, final_hidden: out.final_hidden };
        Ok((out.logits, saved))
    }

    /// Backward of [`Transformer::forward_train`] from `d_logits [B, S, V]` plus an extra
    /// gradient on h^0 (from the MTP modules); `d_scores[i]` adds to block i's gate scores.
    /// The gradient tree has no MTP entries (`mtp` empty): the objective adds them.
    pub fn backward(
        &self,
        b: &B,
        d_logits: &B::Tensor,
        d_final_hidden: Option<&B::Tensor>,
        s: &ModelSaved<B>,
        d_scores: &[Option<B::Tensor>],
    ) -> Result<Params<B::Tensor>> {
        let (mut d_final, d_head) = b.linear_backward(&s.final_hidden, &self.params.head, d_logits)?;
        if let Some(extra) = d_final_hidden {
            d_final = b.add(&d_final, extra)?;
        }
        let (mut d_x, d_norm) = b.rms_norm_backward(&s.hidden, &self.params.norm, &s.norm_rstd, &d_final)?;
        let mut d_layers = Vec::with_capacity(s.blocks.len());
        for (i, (p, saved)) in self.params.layers.iter().zip(&s.blocks).enumerate().rev() {
            let d_scores = d_scores.get(i).and_then(Option::as_ref);
            let (d_block_in, d_block) = block_backward(b, &self.cfg, &self.rope(), p, &d_x, saved, d_scores)?;
            d_x = d_block_in;
            d_layers.push(d_block);
        }
        d_layers.reverse();
        let d_embed = b.embedding_backward(&s.tokens, &d_x, self.cfg.vocab_size)?;
        Ok(Params { embed: d_embed, layers: d_layers, norm: d_norm, head: d_head, mtp: Vec::new() })
    }
}
