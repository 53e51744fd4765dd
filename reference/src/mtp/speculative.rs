//! Speculative decoding with the MTP module (DeepSeek-V3 §5.4.3): module 1 drafts the
//! token after next from the main model's hidden state, and the main model's next forward
//! verifies it, so that an accepted draft yields two tokens per main forward. Greedy
//! decoding only; the output is exactly the main model's greedy continuation, whatever
//! the drafts (the draft only decides how many tokens one forward confirms).
//!
//! The reference recomputes the whole sequence at every forward (no cache): it measures
//! the acceptance rate — the paper reports 85–90% for the second token — not the speed-up.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Transformer;
use ndarray::{Array2, ArrayD, Axis};

/// Counters of one speculative run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeculativeStats {
    /// Forwards of the main model.
    pub forwards: usize,
    /// Drafts that were verified (one per forward after the first, until the end).
    pub drafted: usize,
    /// Drafts the main model agreed with.
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

/// The first index of the largest logit (ties to the lower id, as `torch.argmax`).
fn argmax(row: ndarray::ArrayViewD<'_, f32>) -> i64 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}

fn upload_row<B: Backend>(b: &B, seq: &[i64]) -> Result<B::Indices> {
    b.upload_indices(Array2::from_shape_vec((1, seq.len()), seq.to_vec()).expect("one row").into_dyn().view())
}

/// Module 1's draft of `t[i+2]` given `seq[0..=i+1]` and the main model's final hidden
/// states `h0 [1, ≥ i+1, D]` (positions past i are never read: the module is causal).
fn draft<B: Backend>(b: &B, model: &Transformer<B>, seq: &[i64], h0: &B::Tensor, i: usize) -> Result<i64> {
    let len = i + 2;
    let have = b.shape(h0)[1].min(len);
    let mut h = b.narrow(h0, 1, 0, have)?;
    if have < len {
        h = b.concat(&[&h, &b.zeros(&[1, len - have, model.cfg.dim])?], 1)?;
    }
    let (logits, _) = super::forward_train(b, model, 1, &upload_row(b, &seq[..len])?, &h)?;
    Ok(argmax(b.download(&logits)?.index_axis(Axis(0), 0).index_axis(Axis(0), i)))
}

/// Greedy continuation of `prompt` by `new_tokens` tokens, drafting with MTP module 1.
pub fn generate_greedy<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    prompt: &[i64],
    new_tokens: usize,
) -> Result<(Vec<i64>, SpeculativeStats)> {
    if prompt.is_empty() || model.params.mtp.is_empty() {
        return Err(Error::Input("speculative decoding needs a prompt and an MTP module".into()));
    }
    if prompt.len() + new_tokens + 1 > model.cfg.max_seq_len {
        return Err(Error::Input(format!("{} positions exceed max_seq_len", prompt.len() + new_tokens + 1)));
    }
    let (mut seq, mut stats, mut pending) = (prompt.to_vec(), SpeculativeStats::default(), None::<i64>);
    while seq.len() < prompt.len() + new_tokens {
        let n = seq.len() - 1;
        let input: Vec<i64> = seq.iter().copied().chain(pending).collect();
        let (logits, saved) = model.forward_train(b, &upload_row(b, &input)?)?;
        let logits: ArrayD<f32> = b.download(&logits)?;
        let row = |p: usize| logits.index_axis(Axis(0), 0).index_axis(Axis(0), p).to_owned();
        stats.forwards += 1;
        let next = argmax(row(n).view());
        seq.push(next);
        // The draft sat at position n+1: if it is the true next token, position n+1's
        // prediction is valid too and the forward confirmed two tokens.
        let mut last = n;
        if let Some(d) = pending.take() {
            stats.drafted += 1;
            if d == next {
                stats.accepted += 1;
                seq.push(argmax(row(n + 1).view()));
                last = n + 1;
            }
        }
        if seq.len() < prompt.len() + new_tokens {
            pending = Some(draft(b, model, &seq, &saved.final_hidden, last)?);
        }
    }
    seq.truncate(prompt.len() + new_tokens);
    Ok((seq[prompt.len()..].to_vec(), stats))
}

/// Plain greedy continuation with the main model alone (the baseline the speculative
/// output must equal).
pub fn greedy<B: Backend>(b: &B, model: &Transformer<B>, prompt: &[i64], new_tokens: usize) -> Result<Vec<i64>> {
    let mut seq = prompt.to_vec();
    for _ in 0..new_tokens {
        let (logits, _) = model.forward_train(b, &upload_row(b, &seq)?)?;
        let logits = b.download(&logits)?;
        seq.push(argmax(logits.index_axis(Axis(0), 0).index_axis(Axis(0), seq.len() - 1)));
    }
    Ok(seq[prompt.len()..].to_vec())
}
