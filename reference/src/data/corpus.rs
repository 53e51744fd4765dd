//! Documents in, packed token sequences out (DeepSeek-V3 §4.1: "document packing", FIM
//! at the document level). The split into training and validation is by whole documents,
//! drawn by the seed, so no text is in both.

use super::fim::encode_document;
use super::tokenizer::Tokenizer;
use crate::data::config::DataConfig;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// RNG streams of one seed, one per use, so that none depends on another's draws.
pub(crate) const STREAM_SPLIT: u64 = u64::MAX;
const STREAM_FIM_BASE: u64 = 1 << 32;

/// Reads the documents of `path`: a `.jsonl` file holds one JSON object with a string
/// field `text` per line; any other file is UTF-8 text whose documents are separated by
/// blank lines. Empty documents are dropped.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let docs: Vec<String> = if path.extension().is_some_and(|e| e == "jsonl") {
        let mut docs = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::file(path, format!("line {}: malformed JSON: {e}", i + 1)))?;
            let doc = value.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                Error::file(path, format!("line {}: expected an object with a string field `text`", i + 1))
            })?;
            docs.push(doc.to_string());
        }
        docs
    } else {
        text.split("\n\n").map(|d| d.trim_matches('\n').to_string()).collect()
    };
    let docs: Vec<String> = docs.into_iter().filter(|d| !d.trim().is_empty()).collect();
    if docs.is_empty() {
        return Err(Error::file(path, "no documents"));
    }
    Ok(docs)
}

/// `(train, validation)` document indices, each ascending and disjoint: a seeded shuffle
/// puts `round(val_fraction · n)` documents (at least one when the fraction is positive
/// and there are two or more documents) into validation.
pub fn split_documents(n_docs: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n_docs).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM_SPLIT);
    order.shuffle(&mut rng);
    let mut n_val = (val_fraction * n_docs as f64).round() as usize;
    if val_fraction > 0.0 && n_docs >= 2 {
        n_val = n_val.clamp(1, n_docs - 1);
    }
    let (mut val, mut train) = (order[..n_val].to_vec(), order[n_val..].to_vec());
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// Documents `which` of `docs`, each encoded (FIM with probability `fim_rate`, its own RNG
/// stream per document index) and closed by the end-of-document token, concatenated and
/// cut into sequences of `seq_len`; the incomplete tail is dropped. Returns the flat
/// `[n_sequences · seq_len]` ids.
pub fn pack(
    tok: &dyn Tokenizer,
    docs: &[String],
    which: &[usize],
    fim_rate: f64,
    seed: u64,
    seq_len: usize,
) -> Result<Vec<u32>> {
    let mut stream = Vec::new();
    for &i in which {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(STREAM_FIM_BASE + i as u64);
        stream.extend(encode_document(tok, &docs[i], fim_rate, &mut rng)?);
    }
    stream.truncate(stream.len() / seq_len * seq_len);
    Ok(stream)
}

/// A corpus ready to train on: packed training and validation sequences.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub seq_len: usize,
    pub vocab_size: usize,
    /// `[n_train · seq_len]`.
    pub train: Vec<u32>,
    /// `[n_val · seq_len]`.
    pub val: Vec<u32>,
    pub n_docs: (usize, usize),
}

impl Corpus {
    /// Reads, splits, encodes and packs `path` as `cfg` says.
    pub fn build(path: &Path, tok: &dyn Tokenizer, cfg: &DataConfig) -> Result<Self> {
        let docs = read_documents(path)?;
        let (train_docs, val_docs) = split_documents(docs.len(), cfg.val_fraction, cfg.seed);
        let train = pack(tok, &docs, &train_docs, cfg.fim_rate, cfg.seed, cfg.seq_len)?;
        let val = pack(tok, &docs, &val_docs, cfg.fim_rate, cfg.seed, cfg.seq_len)?;
        if train.is_empty() {
            return Err(Error::file(
                path,
                format!("the training split holds fewer than seq_len = {} tokens", cfg.seq_len),
            ));
        }
        Ok(Corpus {
            seq_len: cfg.seq_len,
            vocab_size: tok.vocab_size(),
            train,
            val,
            n_docs: (train_docs.len(), val_docs.len()),
        })
    }

    pub fn n_train(&self) -> usize {
        self.train.len() / self.seq_len
    }
    pub fn n_val(&self) -> usize {
        self.val.len() / self.seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ByteTokenizer, Special};

    #[test]
    fn splits_never_overlap_and_are_deterministic() {
        for n in [2, 3, 10, 101] {
            let (train, val) = split_documents(n, 0.2, 9);
            assert!(!val.is_empty() && !train.is_empty());
            assert_eq!(train.len() + val.len(), n);
            assert!(train.iter().all(|t| !val.contains(t)));
            assert_eq!(split_documents(n, 0.2, 9), (train, val));
        }
        assert_ne!(split_documents(100, 0.2, 1), split_documents(100, 0.2, 2));
        assert!(split_documents(5, 0.0, 3).1.is_empty());
    }

    #[test]
    fn packing_closes_every_document() {
        let docs: Vec<String> = ["ab", "cde", "f"].iter().map(|s| s.to_string()).collect();
        let t = ByteTokenizer;
        let eos = t.special(Special::EndOfDocument);
        let packed = pack(&t, &docs, &[0, 1, 2], 0.0, 0, 3).unwrap();
        assert_eq!(packed, [97, 98, eos, 99, 100, 101, eos, 102, eos]);
        let cut = pack(&t, &docs, &[0, 1], 0.0, 0, 4).unwrap();
        assert_eq!(cut, [97, 98, eos, 99], "the incomplete tail is dropped");
    }

    #[test]
    fn reads_jsonl_and_blank_line_separated_text() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"text\": \"one\"}\n\n{\"text\": \"two\\n\\nlines\"}\n").unwrap();
        assert_eq!(read_documents(&jsonl).unwrap(), ["one", "two\n\nlines"]);
        let txt = dir.path().join("c.txt");
        std::fs::write(&txt, "first doc\nstill first\n\nsecond\n\n\n").unwrap();
        assert_eq!(read_documents(&txt).unwrap(), ["first doc\nstill first", "second"]);
        std::fs::write(&jsonl, "{\"txt\": 1}\n").unwrap();
        let e = read_documents(&jsonl).unwrap_err().to_string();
        assert!(e.contains("c.jsonl") && e.contains("line 1") && e.contains("text"), "{e}");
    }
}
