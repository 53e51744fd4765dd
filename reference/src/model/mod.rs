//! The whole DeepSeek-V3 transformer (the public code's `Transformer` and `Block`),
//! generic over the backend: embedding, blocks of `x + MLA(norm(x))` then
//! `x + FFN(norm(x))` (dense for the first blocks, MoE after), final norm, head.
//! Logits for every position; incremental decoding with either cache.

pub mod checkpoint;
pub mod train;

// The configuration and parameter types sit below the components that use them (`crate::config`,
// `crate::params`); these paths keep working.
pub use crate::{config, params};

use crate::backend::{Backend, MemoryOps, Routing};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::fp8::LinearRole;
use crate::mla::{rope::RopeTable, AttentionImpl, LayerCache, Mla, Rope, Step};
use crate::moe::{mlp_forward, moe_forward};
use crate::params::{BlockParams, FfnParams, Params};
use ndarray::{ArrayD, ArrayView2};
use train::{BlockSaved, FfnSaved};

/// Everything the conformance suites compare, for one forward.
#[derive(Debug, Clone)]
pub struct Trace<B: Backend> {
    /// `[B, S, D]`.
    pub embed: B::Tensor,
    /// Hidden state after each block, `[B, S, D]`.
    pub layer_out: Vec<B::Tensor>,
    /// Routing of each MoE block (None for dense blocks), tokens flattened batch-major.
    pub routing: Vec<Option<Routing<B>>>,
    /// After the final RMSNorm, `[B, S, D]`.
    pub final_hidden: B::Tensor,
    /// `[B, S, V]`.
    pub logits: B::Tensor,
}

/// A model on a backend: its config, its weights there and its rotary table there.
pub struct Transformer<B: Backend> {
    pub cfg: ModelConfig,
    pub params: Params<B::Tensor>,
    rope_cos: B::Tensor,
    rope_sin: B::Tensor,
}

impl<B: Backend> Transformer<B> {
    /// Uploads host weights (e.g. from [`checkpoint::load`]) to the backend.
    pub fn new(b: &B, cfg: ModelConfig, host: &Params<ArrayD<f32>>) -> Result<Self> {
        let params = host.try_map(|_, _, t| b.upload(t.view()))?;
        let rope = RopeTable::new(&cfg);
        Ok(Transformer {
            rope_cos: b.upload(rope.cos.view().into_dyn())?,
            rope_sin: b.upload(rope.sin.view().into_dyn())?,
            cfg,
            params,
        })
    }

    /// Checks token ids on the host before they reach a backend, naming the first bad one.
    pub fn check_tokens(&self, tokens: ArrayView2<'_, i64>) -> Result<()> {
        if let Some(((b, s), &id)) =
            tokens.indexed_iter().find(|(_, &id)| id < 0 || id as u64 >= self.cfg.vocab_size as u64)
        {
            return Err(Error::Input(format!(
                "token id {id} at [{b}, {s}] is outside the vocabulary (size {})",
                self.cfg.vocab_size
            )));
        }
        if tokens.ncols() > self.cfg.max_seq_len {
            return Err(Error::Input(format!(
                "{} positions exceed max_seq_len {}",
                tokens.ncols(),
                self.cfg.max_seq_len
            )));
        }
        Ok(())
    }

    /// The forward of `tokens [B, S]` at positions `start_pos..`, keeping every intermediate
    /// the conformance suites check. With `caches` (one per layer) earlier positions are
    /// read from them and these are appended.
    pub fn forward_traced(
        &self,
        b: &B,
        tokens: &B::Indices,
        start_pos: usize,
        caches: Option<&mut [LayerCache<B::Tensor>]>,
        imp: AttentionImpl,
    ) -> Result<Trace<B>> {
        let out = self.run(b, tokens, start_pos, caches, imp, Keep { trace: true, backward: false })?;
        let TraceLayers { embed, layer_out, routing } = out.trace.expect("kept");
        Ok(Trace { embed, layer_out, routing, final_hidden: out.final_hidden, logits: out.logits })
    }

    /// The final hidden states `[B, S, D]` (after the last norm: what MTP module 1 reads)
    /// and the logits `[B, S, V]` of `tokens` at positions `start_pos..`, through the
    /// per-layer caches: what decoding needs, without a per-layer trace.
    pub fn forward_cached(
        &self,
        b: &B,
        tokens: &B::Indices,
        start_pos: usize,
        caches: &mut [LayerCache<B::Tensor>],
        imp: AttentionImpl,
    ) -> Result<(B::Tensor, B::Tensor)> {
        let out = self.run(b, tokens, start_pos, Some(caches), imp, Keep::default())?;
        Ok((out.final_hidden, out.logits))
    }

    /// The one driver of the model (inference, traces and training alike): embedding,
    /// every block through [`block_forward`] (at `start_pos`, through the per-layer caches
    /// when given), final norm, head; `keep` says what to keep beside the logits.
    pub(crate) fn run(
        &self,
        b: &B,
        tokens: &B::Indices,
        start_pos: usize,
        mut caches: Option<&mut [LayerCache<B::Tensor>]>,
        imp: AttentionImpl,
        keep: Keep,
    ) -> Result<RunOut<B>> {
        let x0 = b.embedding_forward(&self.params.embed, tokens)?;
        let embed = keep.trace.then(|| x0.clone());
        let mut x = x0;
        let (mut layer_out, mut routing, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in self.params.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            let step = Step { start_pos, cache, attention: imp, save: keep.backward };
            let (y, r, saved) = block_forward(b, &self.cfg, &self.rope(), p, &x, step)?;
            x = y;
            if keep.trace {
                layer_out.push(x.clone());
                routing.push(r);
            }
            blocks.extend(saved);
        }
        let (final_hidden, norm_rstd) = b.rms_norm_forward(&x, &self.params.norm, self.cfg.rms_norm_eps)?;
        let logits = b.linear(&final_hidden, &self.params.head)?; // the head stays f32 (§3.3.1)
        let trace = embed.map(|embed| TraceLayers { embed, layer_out, routing });
        let saved = keep.backward.then_some(SavedLayers { blocks, hidden: x, norm_rstd });
        Ok(RunOut { logits, final_hidden, trace, saved })
    }

    /// Logits `[B, S, V]` for every position (no per-layer trace kept).
    pub fn forward(&self, b: &B, tokens: &B::Indices, imp: AttentionImpl) -> Result<B::Tensor> {
        Ok(self.run(b, tokens, 0, None, imp, Keep::default())?.logits)
    }
}

/// What [`Transformer::run`] keeps beside the logits: the per-layer trace, and what the
/// backward needs (`backward` asks for the naive form from position 0 without caches).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Keep {
    pub trace: bool,
    pub backward: bool,
}

/// What [`Transformer::run`] returns; the callers assemble a [`Trace`] or a
/// [`ModelSaved`](train::ModelSaved) from it, moving the logits and final hidden states rather than copying.
pub(crate) struct RunOut<B: Backend> {
    pub logits: B::Tensor,
    /// After the final norm `[B, S, D]`.
    pub final_hidden: B::Tensor,
    pub trace: Option<TraceLayers<B>>,
    pub saved: Option<SavedLayers<B>>,
}

/// With `Keep::trace`: the embedding, each block's output, each MoE block's routing.
pub(crate) struct TraceLayers<B: Backend> {
    pub embed: B::Tensor,
    pub layer_out: Vec<B::Tensor>,
    pub routing: Vec<Option<Routing<B>>>,
}

/// With `Keep::backward`: each block's saved state, the last block's output (before the
/// final norm) and the final norm's reciprocal RMS.
pub(crate) struct SavedLayers<B: Backend> {
    pub blocks: Vec<BlockSaved<B>>,
    pub hidden: B::Tensor,
    pub norm_rstd: B::Tensor,
}

/// What [`block_forward`] returns: the output, a MoE block's routing, and with `save` the
/// saved state.
pub type BlockOut<B> = (<B as MemoryOps>::Tensor, Option<Routing<B>>, Option<BlockSaved<B>>);

/// One decoder block (the public code's `Block.forward`, also the MTP modules' block):
/// `x + MLA(norm(x))`, then `+ FFN(norm(·))`, run as `step` says (positions, cache,
/// attention form; with `save`, what [`train::block_backward`] needs). Returns the output,
/// the routing of a MoE block, and the saved state.
pub fn block_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    rope: &Rope<'_, B::Tensor>,
    p: &BlockParams<B::Tensor>,
    x: &B::Tensor,
    step: Step<'_, B::Tensor>,
) -> Result<BlockOut<B>> {
    let (eps, save) = (cfg.rms_norm_eps, step.save);
    let (attn_in, attn_rstd) = b.rms_norm_forward(x, &p.attn_norm, eps)?;
    let (attn_out, attn) = Mla { b, cfg, p: &p.attn, rope: *rope }.forward(&attn_in, step)?;
    let x1 = b.add(x, &attn_out)?;
    let (ffn_in, ffn_rstd) = b.rms_norm_forward(&x1, &p.ffn_norm, eps)?;
    let (ffn_out, routing, ffn) = match &p.ffn {
        FfnParams::Dense(mlp) => {
            let (y, saved) = mlp_forward(b, &cfg.precision.linear(LinearRole::Plain), mlp, &ffn_in, save)?;
            (y, None, saved.map(FfnSaved::Dense))
        }
        FfnParams::Moe(moe) => {
            let (y, routing, saved) = moe_forward(b, cfg, moe, &ffn_in, save)?;
            (y, Some(routing), saved.map(FfnSaved::Moe))
        }
    };
    let y = b.add(&x1, &ffn_out)?;
    let saved = match (attn, ffn) {
        (Some(attn), Some(ffn)) => Some(BlockSaved { x: x.clone(), attn_rstd, attn, x1, ffn_rstd, ffn }),
        _ => None,
    };
    Ok((y, routing, saved))
}

/// One sequence of token ids as a `[1, S]` batch on the backend (what decoding feeds),
/// without copying them on the host.
pub fn one_row<B: Backend>(b: &B, ids: &[i64]) -> Result<B::Indices> {
    b.upload_indices(ArrayView2::from_shape((1, ids.len()), ids).expect("one row").into_dyn())
}

/// Incremental decoding: a prefill of any length, then any number of further steps, each
/// reading earlier positions from the cache (the public code's `start_pos` loop).
pub struct Decoder<'m, B: Backend> {
    model: &'m Transformer<B>,
    caches: Vec<LayerCache<B::Tensor>>,
    imp: AttentionImpl,
    pos: usize,
    max_len: usize,
}

impl<'m, B: Backend> Decoder<'m, B> {
    pub fn new(b: &B, model: &'m Transformer<B>, imp: AttentionImpl, batch: usize, max_len: usize) -> Result<Self> {
        if max_len > model.cfg.max_seq_len {
            return Err(Error::Input(format!(
                "cache of {max_len} positions exceeds max_seq_len {}",
                model.cfg.max_seq_len
            )));
        }
        let caches = (0..model.cfg.n_layers)
            .map(|_| LayerCache::new(b, &model.cfg, imp, batch, max_len))
            .collect::<Result<_>>()?;
        Ok(Decoder { model, caches, imp, pos: 0, max_len })
    }

    /// Positions decoded so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Feeds `tokens [B, S]` at the next positions; returns their logits `[B, S, V]`.
    pub fn step(&mut self, b: &B, tokens: &B::Indices) -> Result<B::Tensor> {
        Ok(self.step_hidden(b, tokens)?.1)
    }

    /// As [`Self::step`], returning the final hidden states `[B, S, D]` too.
    pub fn step_hidden(&mut self, b: &B, tokens: &B::Indices) -> Result<(B::Tensor, B::Tensor)> {
        let seq = b.indices_shape(tokens).get(1).copied().unwrap_or(0);
        if self.pos + seq > self.max_len {
            return Err(Error::Input(format!("decoding past the cache's {} positions", self.max_len)));
        }
        let out = self.model.forward_cached(b, tokens, self.pos, &mut self.caches, self.imp)?;
        self.pos += seq;
        Ok(out)
    }

    /// Forgets every position from `pos` on (speculative decoding's rollback of rejected
    /// drafts): the next step writes there, and attention never reads past what is written.
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.max_len
    }
}
