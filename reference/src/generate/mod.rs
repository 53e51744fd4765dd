//! Text generation: a prefill of the prompt, then decoding one position at a time over the
//! cache (MLA's absorbed latent cache by default, §2.1.1), or several at a time with MTP
//! speculative decoding (§5.4.3, [`crate::mtp::speculative`]).
//!
//! [`Generation`] is an iterator of new token ids; [`Generation::stats`] tells what it cost.
//! Greedy decoding (temperature 0) is transformers' greedy `generate`; with sampling, the
//! speculative path keeps a draft by the rule of [`sampling::Dist::verify`], so its tokens
//! are distributed exactly as plain sampling's (for the same seed they differ: the random
//! numbers are used differently).
//!
//! Per round of speculative decoding, with `t_m` the last confirmed token:
//! 1. the drafter proposes `d_{m+1..m+n}` (module k drafts `d_{m+k}`), n ≤ D;
//! 2. one forward of the main model over `[t_m, d_{m+1}, …, d_{m+n}]` at positions `m..`
//!    gives the distributions of `t_{m+1}, …, t_{m+n+1}`;
//! 3. drafts are kept in order while the rule accepts them; the first rejected one is
//!    replaced and ends the round; if all are kept the last distribution gives one more;
//! 4. the main cache is rolled back to the positions whose inputs were all confirmed.

pub mod sampling;
pub mod text;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::mla::AttentionImpl;
use crate::model::{one_row, Decoder, Transformer};
use crate::mtp::speculative::Drafter;
use ndarray::{ArrayD, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
pub use sampling::{argmax, Dist, Sampling, Verdict};
use std::collections::VecDeque;
use std::time::Instant;
pub use text::{decode, eos_ids, load_tokenizer, TextStream};

/// What to generate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seeds the sampler (unused when greedy).
    pub seed: u64,
    /// Draft with this many MTP modules (None: plain decoding).
    pub speculative: Option<usize>,
    /// Generation stops after any of these (the token is part of the output).
    pub eos: Vec<i64>,
    /// The cache decoding reads: the absorbed latent (the default) or per-head keys and values.
    pub attention: AttentionImpl,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::greedy(),
            seed: 0,
            speculative: None,
            eos: Vec::new(),
            attention: AttentionImpl::Absorbed,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// An end-of-sequence token was generated.
    Eos,
    /// `max_new_tokens` were generated.
    Limit,
}

/// What one generation cost and did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Forwards of the main model, the prefill included.
    pub forwards: usize,
    /// Drafts verified, and kept (speculative decoding only).
    pub drafted: usize,
    pub accepted: usize,
    pub prefill_secs: f64,
    /// Every round after the prefill.
    pub decode_secs: f64,
    pub stop: Option<Stop>,
}

impl GenerationStats {
    /// `accepted / drafted` (0 without drafts).
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }
    /// New tokens per forward of the main model (1 for plain decoding).
    pub fn tokens_per_forward(&self) -> f64 {
        self.new_tokens as f64 / self.forwards.max(1) as f64
    }
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-12)
    }
    /// Tokens after the first (which the prefill yields) per second of decoding.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.new_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-12)
    }
}

/// A generation in progress: an iterator of new token ids.
pub struct Generation<'m, B: Backend> {
    b: &'m B,
    model: &'m Transformer<B>,
    opts: GenerateOptions,
    rng: ChaCha8Rng,
    decoder: Decoder<'m, B>,
    drafter: Option<Drafter<B>>,
    /// The prompt and every token decided so far.
    seq: Vec<i64>,
    /// For each new token: whether it was an MTP draft the main model kept.
    from_draft: Vec<bool>,
    pending: VecDeque<i64>,
    stats: GenerationStats,
}

impl<'m, B: Backend> Generation<'m, B> {
    /// Checks `prompt` and `opts` against the model (errors name the setting at fault);
    /// nothing runs until the first token is asked for.
    pub fn new(b: &'m B, model: &'m Transformer<B>, prompt: &[i64], opts: GenerateOptions) -> Result<Self> {
        opts.sampling.validate()?;
        let context = model.cfg.max_seq_len;
        if prompt.is_empty() {
            return Err(Error::setting("prompt", "empty: give at least one token"));
        }
        if prompt.len() > context {
            return Err(Error::setting(
                "prompt",
                format!("{} tokens exceed the context of {context} positions (max_position_embeddings)", prompt.len()),
            ));
        }
        model
            .check_tokens(ArrayView2::from_shape((1, prompt.len()), prompt).expect("one row"))
            .map_err(|e| Error::setting("prompt", e.to_string().replace("invalid input: ", "")))?;
        if prompt.len() + opts.max_new_tokens > context {
            return Err(Error::setting(
                "max_new_tokens",
                format!(
                    "{} prompt tokens + {} new exceed the context of {context} positions: at most {} new fit",
                    prompt.len(),
                    opts.max_new_tokens,
                    context - prompt.len()
                ),
            ));
        }
        let depth = opts.speculative.unwrap_or(0);
        if opts.speculative.is_some() && model.params.mtp.is_empty() {
            return Err(Error::setting("speculative", "the model has no MTP weights to draft with"));
        }
        let capacity = (prompt.len() + opts.max_new_tokens + depth).min(context);
        let decoder = Decoder::new(b, model, opts.attention, 1, capacity)?;
        let drafter = match opts.speculative {
            Some(d) => Some(Drafter::new(b, model, d, capacity, opts.attention)?),
            None => None,
        };
        let stats = GenerationStats { prompt_tokens: prompt.len(), ..Default::default() };
        Ok(Generation {
            b,
            model,
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            opts,
            decoder,
            drafter,
            seq: prompt.to_vec(),
            from_draft: Vec::new(),
            pending: VecDeque::new(),
            stats,
        })
    }

    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }

    /// The new tokens decided so far (some may not have been yielded yet).
    pub fn new_tokens(&self) -> &[i64] {
        &self.seq[self.stats.prompt_tokens..]
    }

    /// For each of [`Self::new_tokens`]: whether it was an MTP draft the main model kept
    /// (false for the main model's own tokens).
    pub fn from_draft(&self) -> &[bool] {
        &self.from_draft
    }

    /// Feeds `tokens` at the decoder's next positions; returns the logits `[n, V]` on the
    /// host and records the hidden states for the drafter.
    fn forward(&mut self, tokens: &[i64]) -> Result<ArrayD<f32>> {
        let b = self.b;
        let start = self.decoder.position();
        let (hidden, logits) = self.decoder.step_hidden(b, &one_row(b, tokens)?)?;
        if let Some(d) = &mut self.drafter {
            d.record_main(b, &hidden, start)?;
        }
        self.stats.forwards += 1;
        Ok(b.download(&logits)?.index_axis_move(Axis(0), 0))
    }

    fn distribution(&self, logits: &ArrayD<f32>, row: usize) -> Result<Dist> {
        let row = logits.index_axis(Axis(0), row);
        self.opts.sampling.distribution(row.as_slice().expect("standard layout"))
    }

    /// One round: the prefill, a plain step, or a speculative one. Returns the new tokens;
    /// all but the last are kept drafts.
    fn round(&mut self) -> Result<Vec<i64>> {
        if self.stats.forwards == 0 {
            let prompt = self.seq.clone();
            let logits = self.forward(&prompt)?;
            return Ok(vec![self.distribution(&logits, prompt.len() - 1)?.sample(&mut self.rng)]);
        }
        let m = self.seq.len() - 1;
        let remaining = self.opts.max_new_tokens - self.new_tokens().len();
        let room = self.decoder.capacity() - 1 - m;
        let n = self.drafter.as_ref().map_or(0, |d| d.depth()).min(remaining - 1).min(room);
        let drafts = match (&mut self.drafter, n) {
            (Some(drafter), 1..) => {
                let (sampling, rng) = (self.opts.sampling, &mut self.rng);
                drafter.draft(self.b, self.model, &self.seq, n, |row| {
                    let q = sampling.distribution(row)?;
                    Ok((q.sample(rng), q))
                })?
            }
            _ => Vec::new(),
        };
        let input: Vec<i64> = std::iter::once(self.seq[m]).chain(drafts.iter().map(|(d, _)| *d)).collect();
        let logits = self.forward(&input)?;
        let mut out = Vec::with_capacity(drafts.len() + 1);
        let mut all_kept = true;
        for (j, (draft, q)) in drafts.iter().enumerate() {
            self.stats.drafted += 1;
            match self.distribution(&logits, j)?.verify(*draft, q, &mut self.rng) {
                Verdict::Accept => {
                    self.stats.accepted += 1;
                    out.push(*draft);
                }
                Verdict::Replace(t) => {
                    out.push(t);
                    all_kept = false;
                    break;
                }
            }
        }
        if all_kept {
            // Every draft kept: the last position gives one more token.
            out.push(self.distribution(&logits, drafts.len())?.sample(&mut self.rng));
        }
        // Positions m..m+kept read only confirmed tokens; the rest held rejected drafts.
        self.decoder.truncate(m + out.len());
        Ok(out)
    }
}

impl<B: Backend> Iterator for Generation<'_, B> {
    type Item = Result<i64>;

    fn next(&mut self) -> Option<Result<i64>> {
        if let Some(t) = self.pending.pop_front() {
            return Some(Ok(t));
        }
        if self.stats.stop.is_some() {
            return None;
        }
        if self.opts.max_new_tokens == 0 {
            self.stats.stop = Some(Stop::Limit);
            return None;
        }
        let start = Instant::now();
        let prefill = self.stats.forwards == 0;
        let tokens = match self.round() {
            Ok(t) => t,
            Err(e) => {
                self.stats.stop = Some(Stop::Limit);
                return Some(Err(e));
            }
        };
        let secs = start.elapsed().as_secs_f64();
        if prefill {
            self.stats.prefill_secs += secs;
        } else {
            self.stats.decode_secs += secs;
        }
        let last = tokens.len() - 1;
        for (i, t) in tokens.into_iter().enumerate() {
            self.seq.push(t);
            self.from_draft.push(i < last);
            self.pending.push_back(t);
            self.stats.new_tokens += 1;
            if self.opts.eos.contains(&t) {
                self.stats.stop = Some(Stop::Eos);
                break;
            }
            if self.stats.new_tokens == self.opts.max_new_tokens {
                self.stats.stop = Some(Stop::Limit);
                break;
            }
        }
        self.pending.pop_front().map(Ok)
    }
}
