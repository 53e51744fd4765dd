//! Training data (DeepSeek-V3 §4.1, "Data Construction"): text documents become token
//! sequences the loop can train on.
//!
//! 1. [`corpus`]: documents from a file (JSON lines with a `text` field, or plain text with
//!    documents separated by blank lines), split into training and validation by whole
//!    documents, so the two never share a document;
//! 2. [`fim`]: Fill-in-the-Middle in the Prefix-Suffix-Middle layout for a share of the
//!    documents (§4.1: rate 0.1), applied per document before packing;
//! 3. [`tokenizer`]: a byte-level tokenizer (256 bytes + special tokens) by default, or any
//!    Hugging Face `tokenizer.json`, e.g. a byte-level BPE (§4.1), through the `tokenizers` crate;
//! 4. packing: documents concatenated, each closed by the end-of-document token, cut into
//!    sequences of `seq_len` positions;
//! 5. [`loader`]: batches in an order fixed by the seed, reshuffled every epoch; its position
//!    is what a checkpoint stores to resume exactly.

pub mod config;
pub mod corpus;
pub mod fim;
pub mod loader;
pub mod tokenizer;

pub use corpus::{pack, read_documents, split_documents, Corpus};
pub use loader::{DataPosition, Loader};
pub use tokenizer::{ByteTokenizer, Special, Tokenizer};
