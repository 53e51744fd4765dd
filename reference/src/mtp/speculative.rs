//! Speculative decoding with the MTP modules (DeepSeek-V3 §5.4.3): the depth-D chain of
//! eqs. 21–23 drafts the next D tokens from the main model's last hidden state, and one
//! forward of the main model over the drafted positions verifies them all; the longest
//! accepted prefix is kept, plus the main model's own next token. The generation loop is
//! [`crate::generate::Generation`]; this module holds the drafter.
//!
//! [`Drafter`] keeps, for each module k, its own decoding cache (the module is one decoder
//! block) and its output states h^k at every position, and the main model's h^0. Module k
//! at position i reads `t_{i+k}` and `h^{k−1}_i` (eq. 21), so once the tokens up to `t_m`
//! are confirmed its positions `0..=m−k` are final; the positions after those read drafted
//! tokens and are recomputed at the next round (the cache rolls back by writing over
//! them). Verification and rollback of the main model's cache are the generation loop's.
//!
//! [`greedy`] recomputes the whole sequence at every step without any cache: the
//! independent oracle the cached decoders are tested against.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Generation};
use crate::mla::{AttentionImpl, LayerCache};
use crate::model::{one_row, Transformer};
use ndarray::Axis;

/// Counters of one speculative run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeculativeStats {
    /// Forwards of the main model (the prefill included).
    pub forwards: usize,
    /// Drafts that were verified.
    pub drafted: usize,
    /// Drafts the main model kept.
    pub accepted: usize,
}

impl SpeculativeStats {
    /// `accepted / drafted` (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// One MTP module's decoding state.
struct Stream<B: Backend> {
    cache: LayerCache<B::Tensor>,
    /// h^k at every position `[1, capacity, D]`.
    hidden: B::Tensor,
    /// Positions `0..valid` were computed from confirmed tokens.
    valid: usize,
}

/// Drafts with MTP modules 1..=depth over their own caches.
pub struct Drafter<B: Backend> {
    streams: Vec<Stream<B>>,
    /// h^0, the main model's final hidden state at every position `[1, capacity, D]`.
    main_hidden: B::Tensor,
}

impl<B: Backend> Drafter<B> {
    /// A drafter with modules 1..=`depth` for sequences of up to `capacity` positions.
    pub fn new(b: &B, model: &Transformer<B>, depth: usize, capacity: usize, imp: AttentionImpl) -> Result<Self> {
        if depth == 0 || depth > model.params.mtp.len() {
            return Err(Error::Input(format!(
                "speculative decoding with {depth} MTP modules, but the model has {}",
                model.params.mtp.len()
            )));
        }
        let hidden = || b.zeros(&[1, capacity, model.cfg.dim]);
        let streams = (0..depth)
            .map(|_| {
                let cache = LayerCache::new(b, &model.cfg, imp, 1, capacity)?;
                Ok(Stream { cache, hidden: hidden()?, valid: 0 })
            })
            .collect::<Result<_>>()?;
        Ok(Drafter { streams, main_hidden: hidden()? })
    }

    pub fn depth(&self) -> usize {
        self.streams.len()
    }

    /// Records the main model's final hidden states `[1, n, D]` of positions `start..`.
    pub fn record_main(&mut self, b: &B, hidden: &B::Tensor, start: usize) -> Result<()> {
        b.write_at(&mut self.main_hidden, hidden, 1, start)
    }

    /// Drafts `n ≤ depth` tokens after `seq`, whose last token `t_m` (m = len − 1) the main
    /// model has not read yet while every earlier position is recorded. Module k drafts
    /// `t_{m+k}`; `choose` turns its logits row into the draft and whatever the caller keeps
    /// of it (its distribution, for verification).
    pub fn draft<Q>(
        &mut self,
        b: &B,
        model: &Transformer<B>,
        seq: &[i64],
        n: usize,
        mut choose: impl FnMut(&[f32]) -> Result<(i64, Q)>,
    ) -> Result<Vec<(i64, Q)>> {
        let m = seq.len() - 1;
        let mut tokens = seq.to_vec();
        let mut drafts = Vec::with_capacity(n);
        for k in 1..=n.min(self.depth()) {
            let (done, rest) = self.streams.split_at_mut(k - 1);
            let stream = &mut rest[0];
            let h_all = done.last().map_or(&self.main_hidden, |s| &s.hidden);
            let start = stream.valid;
            let len = m - start;
            let h_prev = b.narrow(h_all, 1, start, len)?;
            let (hidden, logits) = super::forward_cached(
                b,
                model,
                k,
                &one_row(b, &tokens[start + k..m + k])?,
                &h_prev,
                start,
                &mut stream.cache,
            )?;
            b.write_at(&mut stream.hidden, &hidden, 1, start)?;
            stream.valid = m + 1 - k;
            let logits = b.download(&logits)?;
            let row = logits.index_axis(Axis(0), 0);
            let row = row.index_axis(Axis(0), 0);
            let (token, kept) = choose(row.as_slice().expect("a row of a standard-layout array"))?;
            tokens.push(token);
            drafts.push((token, kept));
        }
        Ok(drafts)
    }
}

/// Greedy continuation of `prompt` by `new_tokens` tokens, drafting with every MTP module
/// over the caches (the library's [`Generation`] with `speculative` set).
pub fn generate_greedy<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    prompt: &[i64],
    new_tokens: usize,
) -> Result<(Vec<i64>, SpeculativeStats)> {
    let opts = GenerateOptions {
        max_new_tokens: new_tokens,
        speculative: Some(model.params.mtp.len()),
        ..GenerateOptions::default()
    };
    let mut generation = Generation::new(b, model, prompt, opts)?;
    let ids = generation.by_ref().collect::<Result<Vec<i64>>>()?;
    let s = generation.stats();
    Ok((ids, SpeculativeStats { forwards: s.forwards, drafted: s.drafted, accepted: s.accepted }))
}

/// Plain greedy continuation with the main model alone, recomputing every position at every
/// step (no cache): the oracle the cached decoders must equal.
pub fn greedy<B: Backend>(b: &B, model: &Transformer<B>, prompt: &[i64], new_tokens: usize) -> Result<Vec<i64>> {
    let mut seq = prompt.to_vec();
    for _ in 0..new_tokens {
        let logits = model.forward(b, &one_row(b, &seq)?, AttentionImpl::Naive)?;
        let logits = b.download(&logits)?;
        let row = logits.index_axis(Axis(0), 0);
        let row = row.index_axis(Axis(0), seq.len() - 1);
        seq.push(crate::generate::argmax(row.as_slice().expect("standard layout")) as i64);
    }
    Ok(seq[prompt.len()..].to_vec())
}
