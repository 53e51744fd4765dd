//! The transformer for training: forward with saved activations and the hand-written
//! backward, block by block (pre-norm residual blocks `x + MLA(norm(x))`,
//! `x + FFN(norm(x))`, then the final norm and the output head).

use super::params::{BlockParams, FfnParams, Params};
use super::Transformer;
use crate::backend::{Backend, Routing};
use crate::error::Result;
use crate::mla::{train::MlaSaved, Mla, Rope};
use crate::model::config::ModelConfig;
use crate::moe::train::{mlp_backward, mlp_forward_train, moe_backward, moe_forward_train, MlpSaved, MoeSaved};

/// A block's feed-forward activations.
#[derive(Debug, Clone)]
pub enum FfnSaved<B: Backend> {
    Dense(MlpSaved<B::Tensor>),
    Moe(MoeSaved<B>),
}

/// What [`block_forward_train`] keeps; every tensor `[B, S, D]` unless said otherwise.
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

/// One decoder block at positions `0..S` (the public code's `Block.forward`).
pub fn block_forward_train<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    rope: &Rope<'_, B::Tensor>,
    p: &BlockParams<B::Tensor>,
    x: &B::Tensor,
) -> Result<(B::Tensor, BlockSaved<B>)> {
    let eps = cfg.rms_norm_eps;
    let (attn_in, attn_rstd) = b.rms_norm_forward(x, &p.attn_norm, eps)?;
    let (attn_out, attn) = Mla { b, cfg, p: &p.attn, rope: *rope }.forward_train(&attn_in)?;
    let x1 = b.add(x, &attn_out)?;
    let (ffn_in, ffn_rstd) = b.rms_norm_forward(&x1, &p.ffn_norm, eps)?;
    let (ffn_out, ffn) = match &p.ffn {
        FfnParams::Dense(mlp) => {
            let (y, s) = mlp_forward_train(b, mlp, &ffn_in)?;
            (y, FfnSaved::Dense(s))
        }
        FfnParams::Moe(moe) => {
            let (y, s) = moe_forward_train(b, cfg, moe, &ffn_in)?;
            (y, FfnSaved::Moe(s))
        }
    };
    let y = b.add(&x1, &ffn_out)?;
    Ok((y, BlockSaved { x: x.clone(), attn_rstd, attn, x1, ffn_rstd, ffn }))
}

/// Backward of [`block_forward_train`]; `dscores` is an extra gradient on a MoE gate's
/// unbiased scores (balance loss). Returns `(dx, grads)`.
pub fn block_backward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    rope: &Rope<'_, B::Tensor>,
    p: &BlockParams<B::Tensor>,
    dy: &B::Tensor,
    s: &BlockSaved<B>,
    dscores: Option<&B::Tensor>,
) -> Result<(B::Tensor, BlockParams<B::Tensor>)> {
    let (dffn_in, ffn) = match (&p.ffn, &s.ffn) {
        (FfnParams::Dense(mlp), FfnSaved::Dense(saved)) => {
            let (dx, g) = mlp_backward(b, mlp, dy, saved)?;
            (dx, FfnParams::Dense(g))
        }
        (FfnParams::Moe(moe), FfnSaved::Moe(saved)) => {
            let (dx, g) = moe_backward(b, cfg, moe, dy, saved, dscores)?;
            (dx, FfnParams::Moe(g))
        }
        _ => return Err(crate::Error::Input("block activations do not match its parameters".into())),
    };
    let (dx1_norm, ffn_norm) = b.rms_norm_backward(&s.x1, &p.ffn_norm, &s.ffn_rstd, &dffn_in)?;
    let dx1 = b.add(dy, &dx1_norm)?;
    let (dattn_in, attn) = Mla { b, cfg, p: &p.attn, rope: *rope }.backward(&dx1, &s.attn)?;
    let (dx_norm, attn_norm) = b.rms_norm_backward(&s.x, &p.attn_norm, &s.attn_rstd, &dattn_in)?;
    Ok((b.add(&dx1, &dx_norm)?, BlockParams { attn_norm, attn, ffn_norm, ffn }))
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
    pub fn forward_train(&self, b: &B, tokens: &B::Indices) -> Result<(B::Tensor, ModelSaved<B>)> {
        let mut x = b.embedding_forward(&self.params.embed, tokens)?;
        let mut blocks = Vec::with_capacity(self.params.layers.len());
        for p in &self.params.layers {
            let (y, saved) = block_forward_train(b, &self.cfg, &self.rope(), p, &x)?;
            x = y;
            blocks.push(saved);
        }
        let (final_hidden, norm_rstd) = b.rms_norm_forward(&x, &self.params.norm, self.cfg.rms_norm_eps)?;
        let logits = b.linear(&final_hidden, &self.params.head)?;
        Ok((logits, ModelSaved { tokens: tokens.clone(), blocks, hidden: x, norm_rstd, final_hidden }))
    }

    /// Backward of [`Transformer::forward_train`] from `dlogits [B, S, V]` plus an extra
    /// gradient on h^0 (from the MTP modules); `dscores[i]` adds to block i's gate scores.
    /// The gradient tree has no MTP entries (`mtp` empty): the objective adds them.
    pub fn backward(
        &self,
        b: &B,
        dlogits: &B::Tensor,
        dfinal_hidden: Option<&B::Tensor>,
        s: &ModelSaved<B>,
        dscores: &[Option<B::Tensor>],
    ) -> Result<Params<B::Tensor>> {
        let (mut dfinal, head) = b.linear_backward(&s.final_hidden, &self.params.head, dlogits)?;
        if let Some(extra) = dfinal_hidden {
            dfinal = b.add(&dfinal, extra)?;
        }
        let (mut dx, norm) = b.rms_norm_backward(&s.hidden, &self.params.norm, &s.norm_rstd, &dfinal)?;
        let mut layers = Vec::with_capacity(s.blocks.len());
        for (i, (p, saved)) in self.params.layers.iter().zip(&s.blocks).enumerate().rev() {
            let (d, g) =
                block_backward(b, &self.cfg, &self.rope(), p, &dx, saved, dscores.get(i).and_then(Option::as_ref))?;
            dx = d;
            layers.push(g);
        }
        layers.reverse();
        let embed = b.embedding_backward(&s.tokens, &dx, self.cfg.vocab_size)?;
        Ok(Params { embed, layers, norm, head, mtp: Vec::new() })
    }
}
