//! `v3lab logits --checkpoint DIR --tokens FILE --out FILE`: the CLI contract of ARCHITECTURE.md.
//! Tokens: safetensors with an I64 tensor `tokens` [B, S]; output: F32 `logits` [B, S, V].
//! The forward is generic over the backend: `--backend cuda` runs it on the GPU (and
//! fails with a clear error where there is none); `--decode` computes the same logits by
//! incremental decoding through the cache, one position at a time.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ndarray::{ArrayD, Axis};
use std::path::PathBuf;
use v3lab::checkpoint::Checkpoint;
use v3lab::io::{check_output_file, refuse_output_over_input, write_safetensors, OwnedTensor};
use v3lab::{checkpoint, AttentionImpl, Backend, CpuBackend, Decoder, Transformer};

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendChoice {
    /// The f32 reference on the CPU.
    Cpu,
    /// The CUDA backend on device 0 (kernels compiled by NVRTC at first use).
    Cuda,
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
    /// Compute the logits by incremental decoding (one position per step, through the
    /// cache of the chosen attention) instead of one forward over all positions.
    #[arg(long)]
    pub decode: bool,
    /// Run even where the model would need more memory than this machine has.
    #[arg(long)]
    pub no_memory_check: bool,
}

/// Reads `tokens` [B, S] (I64) from a safetensors file.
pub fn read_tokens(path: &std::path::Path) -> Result<ndarray::Array2<i64>> {
    Ok(v3lab::io::read_tokens(path)?)
}

/// Logits `[B, S, V]` of `tokens` on backend `b`.
fn logits_on<B: Backend>(
    b: &B,
    ckpt: &Checkpoint,
    tokens: &ndarray::Array2<i64>,
    imp: AttentionImpl,
    decode: bool,
    tokens_path: &std::path::Path,
) -> Result<ArrayD<f32>> {
    let model = Transformer::new(b, ckpt.config.clone(), &ckpt.params)?;
    model.check_tokens(tokens.view()).with_context(|| format!("{}: tensor `tokens`", tokens_path.display()))?;
    if !decode {
        let logits = model.forward(b, &b.upload_indices(tokens.view().into_dyn())?, imp)?;
        return Ok(b.download(&logits)?);
    }
    let mut dec = Decoder::new(b, &model, imp, tokens.nrows(), tokens.ncols())?;
    let mut steps = Vec::new();
    for pos in 0..tokens.ncols() {
        let one = tokens.slice(ndarray::s![.., pos..pos + 1]).to_owned().into_dyn();
        steps.push(b.download(&dec.step(b, &b.upload_indices(one.view())?)?)?);
    }
    let views: Vec<_> = steps.iter().map(|a| a.view()).collect();
    Ok(ndarray::concatenate(Axis(1), &views)?)
}

pub fn run(args: &LogitsArgs) -> Result<()> {
    let (weights, config) = (args.checkpoint.join("model.safetensors"), args.checkpoint.join("config.json"));
    let inputs = [("--tokens", args.tokens.as_path()), ("--checkpoint", &weights), ("--checkpoint", &config)];
    refuse_output_over_input("--out", &args.out, &inputs)?;
    check_output_file(&args.out)?;
    let tokens = read_tokens(&args.tokens)?;
    super::memory_preflight(&args.checkpoint, tokens.nrows(), tokens.ncols(), args.no_memory_check)?;
    let ckpt = checkpoint::load(&args.checkpoint)?;
    for note in &ckpt.notes {
        eprintln!("note: {note}");
    }
    let imp = match args.attention {
        AttentionChoice::Naive => AttentionImpl::Naive,
        AttentionChoice::Absorbed => AttentionImpl::Absorbed,
    };
    let logits = match args.backend {
        BackendChoice::Cpu => logits_on(&CpuBackend, &ckpt, &tokens, imp, args.decode, &args.tokens)?,
        BackendChoice::Cuda => {
            let b = v3lab_gpu::CudaBackend::new().context("--backend cuda")?;
            logits_on(&b, &ckpt, &tokens, imp, args.decode, &args.tokens)?
        }
    };
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        let v = logits.shape()[2];
        bail!("non-finite logit at [{}, {}, {}]", i / v / tokens.ncols(), (i / v) % tokens.ncols(), i % v);
    }
    write_safetensors(&args.out, &[OwnedTensor::f32("logits", logits.view())])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--decode` (one position per step through either cache) gives the forward's logits.
    #[test]
    fn decode_matches_forward_on_the_cpu() {
        let goldens = std::env::var_os("V3LAB_GOLDENS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/goldens"));
        let dir = goldens.join("official-v3-tiny");
        let ckpt = checkpoint::load(&dir).unwrap();
        let tokens = ndarray::Array2::from_shape_fn((2, 9), |(b, s)| ((7 * b + 5 * s) % 50) as i64);
        for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
            let path = std::path::Path::new("tokens");
            let full = logits_on(&CpuBackend, &ckpt, &tokens, imp, false, path).unwrap();
            let steps = logits_on(&CpuBackend, &ckpt, &tokens, imp, true, path).unwrap();
            let diff: f32 = (&full - &steps).mapv(|v| v * v).sum().sqrt();
            let norm: f32 = full.mapv(|v| v * v).sum().sqrt();
            // Same f32 quantities in another order (CPU_F32_REORDERED in the conformance crate).
            assert!(diff / norm < 1e-5, "{imp:?}: decode vs forward {}", diff / norm);
        }
    }
}
