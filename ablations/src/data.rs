//! The corpus as token sequences: one mixed training stream (all domains, FIM at the
//! paper's rate, packed with end-of-document tokens) and per-domain validation sequences
//! (plain text, no FIM), so that every variant sees the same data and is evaluated per
//! domain the same way.

use crate::corpus::{Corpus, Domain};
use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use v3lab_reference::data::{pack, ByteTokenizer, Tokenizer};

/// §4.1: Fill-in-the-Middle on 10% of the documents.
pub const FIM_RATE: f64 = 0.1;

pub struct Tokenized {
    pub seq_len: usize,
    /// `[n · seq_len]` training ids, every domain mixed.
    pub train: Vec<u32>,
    /// Per domain, `[n · seq_len]` validation ids.
    pub validation: BTreeMap<Domain, Vec<u32>>,
    pub vocab_size: usize,
}

impl Tokenized {
    pub fn new(corpus: &Corpus, seq_len: usize, seed: u64) -> Result<Self> {
        let tok = ByteTokenizer;
        let texts: Vec<String> = corpus.train.iter().map(|d| d.text.clone()).collect();
        let all: Vec<usize> = (0..texts.len()).collect();
        let train = pack(&tok, &texts, &all, FIM_RATE, seed, seq_len)?;
        ensure!(!train.is_empty(), "the training split holds fewer than {seq_len} tokens");
        let mut validation = BTreeMap::new();
        for domain in Domain::ALL {
            let texts: Vec<String> =
                corpus.validation.iter().filter(|d| d.domain == domain).map(|d| d.text.clone()).collect();
            let all: Vec<usize> = (0..texts.len()).collect();
            let ids = pack(&tok, &texts, &all, 0.0, seed, seq_len)?;
            if !ids.is_empty() {
                validation.insert(domain, ids);
            }
        }
        ensure!(!validation.is_empty(), "no domain has a full validation sequence of {seq_len} tokens");
        Ok(Tokenized { seq_len, train, validation, vocab_size: tok.vocab_size() })
    }

    /// The first `n` validation sequences of `domain`, flat.
    pub fn validation_head(&self, domain: Domain, n: usize) -> &[u32] {
        let ids = &self.validation[&domain];
        &ids[..ids.len().min(n * self.seq_len)]
    }

    /// Up to `n` sequences of every domain, concatenated (the trainer's validation set).
    pub fn validation_mix(&self, n: usize) -> Vec<u32> {
        self.validation.keys().flat_map(|&d| self.validation_head(d, n).iter().copied()).collect()
    }
}
