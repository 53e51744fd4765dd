//! v3lab's CPU reference of DeepSeek-V3: the [`Backend`] trait and [`CpuBackend`](type@CpuBackend), every
//! component of the model (one module per idea of the paper), configuration and
//! checkpoints in the released layout.
//!
//! The reference is the executable specification: plain f32, no cleverness; every other
//! backend is held to it by `v3lab-conformance`, and it is held to the public PyTorch code
//! by the goldens in `../shared/goldens`.

pub mod backend;
pub mod balance;
pub mod config;
pub mod data;
pub mod deploy;
pub mod eplb;
pub mod error;
pub mod fp8;
pub mod generate;
pub mod io;
pub mod lab;
pub mod mla;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod params;
pub mod pipeline;
pub mod plot;
pub mod train;

pub use backend::{AdamWStep, Backend, CpuBackend, RouteSpec, Routing, ScoreFunc};
pub use config::ModelConfig;
pub use error::{Error, Result};
pub use mla::AttentionImpl;
pub use model::{checkpoint, Decoder, Trace, Transformer};
pub use params::Params;
/// The tokenizers crate, whose `Tokenizer` [`generate::load_tokenizer`] returns.
pub use tokenizers;
