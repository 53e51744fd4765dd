//! `v3lab train --checkpoint DIR --tokens FILE --config FILE --out DIR`: trains the model
//! of DIR (DeepSeek-V3 §4.2: AdamW, clipping, the schedule; §2.2 MTP; §2.1.2 balancing).
//!
//! - `--tokens FILE`: safetensors with an I64 `tokens` [B, S], the batch of every step;
//!   `--corpus FILE` instead trains on a text corpus (`.jsonl` with `text`, or blank-line
//!   separated text), packed and split as `train.json`'s `data` section says.
//! - `--config FILE`: `train.json` (the form of `../shared/goldens/train-v3-tiny/train.json`).
//! - `--out DIR` receives `metrics.jsonl` (one JSON object per step: `step`, `total`, `main`,
//!   `mtp`, `aux` before the update, `grad_norm` before clipping, ...), `model.safetensors`
//!   (released names, MTP layers included), `config.json`, and resumable checkpoints in
//!   `checkpoints/step-NNNNNN/`; with `--corpus`, also the tokenizer that read it
//!   (`tokenizer.json`, `tokenizer_config.json`), so that transformers' `AutoTokenizer` opens
//!   the folder.
//! - `--resume`: DIR is such a checkpoint; the run continues exactly where it stopped.
//! - `--init-seed N`: ignore DIR's weights (it may hold only `config.json`) and start from
//!   the paper's random initialisation (std 0.006), seeded by N.
//! - `--backend cuda`: train on the GPU (the same model code; every forward and backward
//!   primitive and AdamW run there), or fail with a clear error where there is none.

use super::logits::BackendChoice;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use v3lab::config::size::{check_memory, training_need};
use v3lab::data::tokenizer::{from_spec, Special, Tokenizer};
use v3lab::data::{Corpus, DataPosition, Loader};
use v3lab::io::{refuse_output_over_input, write_atomically, OutputDir};
use v3lab::model::config::ModelConfig;
use v3lab::params::Layout;
use v3lab::train::init::{init_params, INIT_STD};
use v3lab::train::trainer::Batches;
use v3lab::train::{TrainConfig, Trainer};
use v3lab::{checkpoint, Backend, CpuBackend, Transformer};

#[derive(Args)]
pub struct TrainArgs {
    /// Model folder: config.json and weights (or a training checkpoint with --resume).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Safetensors file with an I64 tensor `tokens` [B, S]: the batch of every step.
    #[arg(long, conflicts_with = "corpus", required_unless_present = "corpus")]
    pub tokens: Option<PathBuf>,
    /// A text corpus instead (.jsonl with a `text` field per line, or blank-line separated text).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// train.json: steps, lr, betas, eps, weight_decay, clip_norm, mtp_depth, mtp_lambda, balance, ...
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder: metrics.jsonl, model.safetensors, config.json, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run saved in the --checkpoint folder (a checkpoints/step-N folder).
    #[arg(long)]
    pub resume: bool,
    /// Start from random weights (std 0.006) drawn from this seed; only config.json is read.
    #[arg(long, conflicts_with = "resume")]
    pub init_seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Train even where the model and batch would need more memory than this machine has.
    #[arg(long)]
    pub no_memory_check: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
}

/// The batches to train on, and the tokenizer that made them from text (none for `--tokens`).
fn batches(args: &TrainArgs, cfg: &TrainConfig) -> Result<(Batches, Option<Box<dyn Tokenizer>>)> {
    if let Some(path) = &args.tokens {
        let tokens = super::logits::read_tokens(path)?;
        if tokens.ncols() < 2 {
            bail!("{}: tensor `tokens` needs at least 2 positions to predict a next token", path.display());
        }
        return Ok((Batches::Fixed(tokens), None));
    }
    let path = args.corpus.as_ref().expect("clap requires --tokens or --corpus");
    let tok = from_spec(&cfg.data.tokenizer).with_context(|| format!("{}", args.config.display()))?;
    let corpus = Corpus::build(path, tok.as_ref(), &cfg.data)?;
    eprintln!(
        "corpus {}: {} training sequences ({} documents), {} validation sequences ({} documents) of {} tokens",
        path.display(),
        corpus.n_train(),
        corpus.n_docs.0,
        corpus.n_val(),
        corpus.n_docs.1,
        corpus.seq_len
    );
    let pos = DataPosition { seed: cfg.data.seed, ..Default::default() };
    let data = Batches::Corpus { loader: Loader::new(corpus.train, corpus.seq_len, pos)?, val: corpus.val };
    Ok((data, Some(tok)))
}

/// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` (its end of
/// sequence: the end-of-document token) beside the model, so that transformers'
/// `AutoTokenizer` and `generate` open `--out` as they open a released checkpoint.
fn write_tokenizer(out: &Path, tok: &dyn Tokenizer, seq_len: usize) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = tok.to_json()?;
    write_atomically(&out.join("tokenizer.json"), |f| f.write_all(json.as_bytes()))?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": Special::EndOfDocument.text(),
        "model_max_length": seq_len,
    });
    let config = serde_json::to_string_pretty(&config)?;
    write_atomically(&out.join("tokenizer_config.json"), |f| f.write_all(config.as_bytes()))?;
    let eos = tok.special(Special::EndOfDocument);
    let generation = serde_json::json!({ "eos_token_id": eos });
    let generation = serde_json::to_string_pretty(&generation)?;
    write_atomically(&out.join("generation_config.json"), |f| f.write_all(generation.as_bytes()))?;
    Ok(())
}

/// Refuses, before anything is allocated, a model whose MTP depth disagrees with
/// train.json or that would not fit in this machine's memory.
fn preflight(args: &TrainArgs, cfg: &TrainConfig, data: &Batches) -> Result<()> {
    let config_path = args.checkpoint.join("config.json");
    let model = ModelConfig::from_file(&config_path)?;
    if args.init_seed.is_some() && model.n_mtp_layers != cfg.mtp_depth {
        bail!(
            "{}: train.json `mtp_depth` {} but {} has `num_nextn_predict_layers` {}",
            args.config.display(),
            cfg.mtp_depth,
            config_path.display(),
            model.n_mtp_layers
        );
    }
    let (batch, positions) = match data {
        Batches::Fixed(t) => (t.nrows(), t.ncols()),
        Batches::Corpus { .. } => (cfg.data.batch_size, cfg.data.seq_len),
    };
    let need = training_need(&model, Layout::default(), batch, positions)?;
    if !args.no_memory_check {
        check_memory(&need, None, "--no-memory-check").with_context(|| config_path.display().to_string())?;
    }
    Ok(())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = TrainConfig::from_file(&args.config)?;
    let mut inputs: Vec<(&str, &Path)> = vec![("--checkpoint", &args.checkpoint), ("--config", &args.config)];
    inputs.extend(args.tokens.as_deref().map(|p| ("--tokens", p)));
    inputs.extend(args.corpus.as_deref().map(|p| ("--corpus", p)));
    refuse_output_over_input("--out", &args.out, &inputs)?;
    let (data, tokenizer) = batches(args, &cfg)?;
    preflight(args, &cfg, &data)?;
    // Held until the run ends: a second run into the same folder is refused, and what a
    // killed run left half-written there is swept away first.
    let _out = OutputDir::lock(&args.out)?;
    if let Some(tok) = &tokenizer {
        write_tokenizer(&args.out, tok.as_ref(), cfg.data.seq_len)?;
    }
    match args.backend {
        BackendChoice::Cpu => train_on(&CpuBackend::default(), args, cfg, data),
        BackendChoice::Cuda => {
            let b = v3lab_gpu::CudaBackend::new().context("--backend cuda")?;
            eprintln!("training on {} (CUDA backend)", b.device_name());
            train_on(&b, args, cfg, data)
        }
    }
}

fn train_on<B: Backend>(b: &B, args: &TrainArgs, cfg: TrainConfig, data: Batches) -> Result<()> {
    let mut trainer = if args.resume {
        Trainer::resume(b, &args.checkpoint, cfg, data)?
    } else {
        let (config, params) = match args.init_seed {
            Some(seed) => {
                let config = ModelConfig::from_file(&args.checkpoint.join("config.json"))?;
                let params = init_params(&config, INIT_STD, seed)?;
                (config, params)
            }
            None => {
                let ckpt = checkpoint::load(&args.checkpoint)?;
                for note in &ckpt.notes {
                    eprintln!("note: {note}");
                }
                if cfg.mtp_depth > ckpt.params.mtp.len() {
                    let what = format!("train.json `mtp_depth` {}", cfg.mtp_depth);
                    return Err(ckpt.no_mtp_error(&args.checkpoint, &what).into());
                }
                (ckpt.config, ckpt.params)
            }
        };
        if cfg.mtp_depth != params.mtp.len() {
            bail!(
                "{}: train.json `mtp_depth` {} but the model in {} has {} MTP module(s) (num_nextn_predict_layers)",
                args.config.display(),
                cfg.mtp_depth,
                args.checkpoint.display(),
                params.mtp.len()
            );
        }
        let model = Transformer::new(b, config, &params)?;
        // What Trainer::new still refuses here is about the batch: name its file.
        Trainer::new(b, model, cfg, data).map_err(|e| match (&args.tokens, &e) {
            (Some(path), _) => anyhow::Error::new(e).context(format!("{}: tensor `tokens`", path.display())),
            (None, v3lab::Error::Config { .. }) => anyhow::Error::new(e).context(args.config.display().to_string()),
            (None, _) => e.into(),
        })?
    };
    let total = trainer.cfg.steps as u64;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template"),
    );
    bar.set_position(trainer.step as u64);
    let (start, tokens_before) = (Instant::now(), trainer.tokens_seen());
    trainer.run(&args.out, |m| {
        let secs = start.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.4} (main {:.4}) |g| {:.3} lr {:.2e} {:.0} tok/s{}",
            m.total,
            m.main,
            m.grad_norm,
            m.lr,
            (m.tokens - tokens_before) as f64 / secs,
            m.val_loss.map_or(String::new(), |v| format!(" val {v:.4}"))
        ));
        bar.inc(1);
    })?;
    bar.finish();
    eprintln!("wrote {} (model.safetensors, config.json, metrics.jsonl, checkpoints/)", args.out.display());
    Ok(())
}
