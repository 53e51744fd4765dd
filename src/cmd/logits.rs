//! `v3lab logits --checkpoint DIR --tokens FILE --out FILE`: the contract of DESIGN.md.
//! Tokens: safetensors with an I64 tensor `tokens` [B, S]; output: F32 `logits` [B, S, V].

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ndarray::Ix2;
use std::path::PathBuf;
use v3lab::io::{write_safetensors, MappedFile, OwnedTensor};
use v3lab::{checkpoint, AttentionImpl, Backend, CpuBackend, Transformer};

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendChoice {
    Cpu,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AttentionChoice {
    /// Per-head keys and values (what training differentiates).
    Naive,
    /// W_UK folded into the query, attention over the latent (the public code's default).
    Absorbed,
}

#[derive(Args)]
pub struct LogitsArgs {
    /// Checkpoint folder: config.json and safetensors weights (released or public naming).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Safetensors file with an I64 tensor `tokens` [B, S].
    #[arg(long)]
    pub tokens: PathBuf,
    /// Where to write the F32 tensor `logits` [B, S, V] (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    #[arg(long, value_enum, default_value = "absorbed")]
    pub attention: AttentionChoice,
}

/// Reads `tokens` [B, S] (I64) from a safetensors file.
pub fn read_tokens(path: &std::path::Path) -> Result<ndarray::Array2<i64>> {
    let file = MappedFile::open(path)?;
    let tokens = file.i64("tokens")?;
    let shape = tokens.shape().to_vec();
    let tokens = tokens.into_dimensionality::<Ix2>().map_err(|_| {
        anyhow::anyhow!("{}: tensor `tokens`: shape {shape:?}, expected [batch, positions]", path.display())
    })?;
    if tokens.is_empty() {
        bail!("{}: tensor `tokens` is empty ({shape:?})", path.display());
    }
    Ok(tokens)
}

pub fn run(args: &LogitsArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let tokens = read_tokens(&args.tokens)?;
    let imp = match args.attention {
        AttentionChoice::Naive => AttentionImpl::Naive,
        AttentionChoice::Absorbed => AttentionImpl::Absorbed,
    };
    let logits = match args.backend {
        BackendChoice::Cpu => {
            let b = CpuBackend;
            let model = Transformer::new(&b, ckpt.config, &ckpt.params)?;
            model.check_tokens(tokens.view()).with_context(|| format!("{}: tensor `tokens`", args.tokens.display()))?;
            let logits = model.forward(&b, &b.upload_indices(tokens.view().into_dyn())?, imp)?;
            b.download(&logits)?
        }
    };
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        let v = logits.shape()[2];
        bail!("non-finite logit at [{}, {}, {}]", i / v / tokens.ncols(), (i / v) % tokens.ncols(), i % v);
    }
    write_safetensors(&args.out, &[OwnedTensor::f32("logits", logits.view())])?;
    Ok(())
}
