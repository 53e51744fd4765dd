//! What `train.json`'s `data` section says (§4.1 "Data Construction", §4.2's batch-size
//! warm-up): the data pipeline's own configuration, below the training loop that reads it
//! (`train::config` re-exports these types).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which tokenizer turns a text corpus into ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// 256 bytes plus the special tokens (the default).
    #[default]
    Byte,
    /// A Hugging Face `tokenizer.json`, read through the `tokenizers` crate.
    Bpe { path: PathBuf },
}

/// The text corpus of a real run (`v3lab train --corpus`), §4.1 "Data Construction".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Positions per training sequence.
    pub seq_len: usize,
    /// Sequences per step (the full batch when a batch warm-up is set).
    pub batch_size: usize,
    pub batch_warmup: Option<BatchWarmup>,
    /// Share of documents turned into Fill-in-the-Middle, PSM layout (§4.1: 0.1).
    pub fim_rate: f64,
    /// Share of documents held out for validation (whole documents: the splits never overlap).
    pub val_fraction: f64,
    /// Seeds the split, FIM and the order of sequences.
    pub seed: u64,
    pub tokenizer: TokenizerSpec,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            seq_len: 256,
            batch_size: 8,
            batch_warmup: None,
            fim_rate: 0.1,
            val_fraction: 0.01,
            seed: 0,
            tokenizer: TokenizerSpec::Byte,
        }
    }
}

/// Batch-size warm-up (§4.2): from `start` sequences, growing linearly with the tokens
/// trained on, to the full batch after `tokens`; `train.json` `data.batch_warmup`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchWarmup {
    pub start: usize,
    pub tokens: u64,
}

impl BatchWarmup {
    /// Sequences in the next batch after `tokens_seen` tokens, for a full batch of `full`.
    pub fn batch_size(&self, full: usize, tokens_seen: u64) -> usize {
        if self.tokens == 0 || tokens_seen >= self.tokens || self.start >= full {
            return full;
        }
        let grown = (full - self.start) as f64 * tokens_seen as f64 / self.tokens as f64;
        (self.start + grown as usize).clamp(1, full)
    }
}
