//! One module per subcommand.

pub mod eplb;
pub mod fp8;
pub mod generate;
pub mod inspect;
pub mod logits;
pub mod pipeline;
pub mod plan;
pub mod train;

use anyhow::{Context, Result};
use std::path::Path;
use v3lab::config::size::{check_memory, inference_need};
use v3lab::params::Layout;
use v3lab::ModelConfig;

/// Refuses, before any weight is read, a model (and `batch × positions` of activations)
/// that would not fit in this machine's memory, unless `skip` (`--no-memory-check`).
pub fn memory_preflight(checkpoint: &Path, batch: usize, positions: usize, skip: bool) -> Result<()> {
    if skip {
        return Ok(());
    }
    let path = checkpoint.join("config.json");
    let Ok(model) = ModelConfig::from_file(&path) else {
        // Loading reports the broken config.json itself, with its own message.
        return Ok(());
    };
    let need = inference_need(&model, Layout::default(), batch, positions)?;
    check_memory(&need, None, "--no-memory-check").with_context(|| path.display().to_string())
}
