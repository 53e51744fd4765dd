//! `v3lab generate --checkpoint DIR (--prompt TEXT | --prompt-ids 1,2,3) [--max-new-tokens N]
//! [--temperature T] [--top-p P] [--top-k K] [--seed S] [--speculative mtp] [--backend cpu|cuda]
//! [--json]`: a prefill, then decoding over MLA's absorbed latent cache (or `--attention
//! naive`), optionally drafting with the checkpoint's MTP modules. Text streams to stdout as it
//! is generated and one summary line goes to stderr; `--json` prints one object instead.

use super::logits::{AttentionChoice, BackendChoice};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use v3lab::checkpoint::{self, Checkpoint};
use v3lab::generate::{
    decode, eos_ids, load_tokenizer, GenerateOptions, Generation, GenerationStats, Sampling, TextStream,
};
use v3lab::{AttentionImpl, Backend, CpuBackend, Error, Transformer};

#[derive(Clone, Copy, ValueEnum)]
pub enum SpeculativeChoice {
    /// Draft with every MTP module of the checkpoint (§5.4.3).
    Mtp,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_ids"]))]
pub struct GenerateArgs {
    /// Checkpoint folder (config.json, safetensors weights; tokenizer.json and
    /// generation_config.json when present).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The prompt as text (needs the checkpoint's tokenizer.json).
    #[arg(long)]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub prompt_ids: Option<Vec<i64>>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 is greedy (transformers' greedy `generate`).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose mass reaches P, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Speculative decoding: draft with the MTP modules, verify with one main forward.
    #[arg(long, value_enum)]
    pub speculative: Option<SpeculativeChoice>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    #[arg(long, value_enum, default_value = "absorbed")]
    pub attention: AttentionChoice,
    /// Print one JSON object (ids, text, statistics) on stdout instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Run even where the model would need more memory than this machine has.
    #[arg(long)]
    pub no_memory_check: bool,
}

/// The flag that sets a library setting, for its errors.
fn flag(args: &GenerateArgs, setting: &str) -> &'static str {
    match setting {
        "prompt" if args.prompt.is_some() => "--prompt",
        "prompt" => "--prompt-ids",
        "max_new_tokens" => "--max-new-tokens",
        "temperature" => "--temperature",
        "top_p" => "--top-p",
        "top_k" => "--top-k",
        "speculative" => "--speculative",
        _ => "",
    }
}

fn with_flag(args: &GenerateArgs, e: Error) -> anyhow::Error {
    match e {
        Error::Setting { name, msg } if !flag(args, name).is_empty() => anyhow::anyhow!("{}: {msg}", flag(args, name)),
        e => e.into(),
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let sampling = Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p };
    sampling.validate().map_err(|e| with_flag(args, e))?;
    let dir = &args.checkpoint;
    super::memory_preflight(dir, 1, args.max_new_tokens.saturating_add(1), args.no_memory_check)?;
    let ckpt = checkpoint::load(dir)?;
    for note in &ckpt.notes {
        eprintln!("note: {note}");
    }
    if args.speculative.is_some() && ckpt.params.mtp.is_empty() {
        return Err(anyhow::Error::new(ckpt.no_mtp_error(dir, "--speculative mtp")));
    }
    let tokenizer = load_tokenizer(dir)?;
    let prompt: Vec<i64> = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => {
            let Some(tok) = &tokenizer else {
                bail!("--prompt: {} has no tokenizer.json; give --prompt-ids instead", dir.display())
            };
            let enc = tok.encode(text.as_str(), true).map_err(|e| anyhow::anyhow!("--prompt: encoding failed: {e}"))?;
            enc.get_ids().iter().map(|&i| i as i64).collect()
        }
        (None, Some(ids)) => ids.clone(),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        speculative: args.speculative.map(|_| ckpt.params.mtp.len()),
        eos: eos_ids(dir)?,
        attention: match args.attention {
            AttentionChoice::Naive => AttentionImpl::Naive,
            AttentionChoice::Absorbed => AttentionImpl::Absorbed,
        },
    };
    match args.backend {
        BackendChoice::Cpu => generate_on(&CpuBackend::default(), args, &ckpt, &prompt, opts, tokenizer.as_ref()),
        BackendChoice::Cuda => {
            let b = v3lab_gpu::CudaBackend::new().context("--backend cuda")?;
            generate_on(&b, args, &ckpt, &prompt, opts, tokenizer.as_ref())
        }
    }
}

fn generate_on<B: Backend>(
    b: &B,
    args: &GenerateArgs,
    ckpt: &Checkpoint,
    prompt: &[i64],
    opts: GenerateOptions,
    tokenizer: Option<&v3lab::tokenizers::Tokenizer>,
) -> Result<()> {
    let model = Transformer::new(b, ckpt.config.clone(), &ckpt.params)?;
    let mut generation = Generation::new(b, &model, prompt, opts).map_err(|e| with_flag(args, e))?;
    // Streaming decodes as the ids come; --json decodes once at the end.
    let mut stream = if args.json { None } else { tokenizer.map(TextStream::new) };
    let mut out = std::io::stdout().lock();
    for (i, id) in generation.by_ref().enumerate() {
        let id = id?;
        if args.json {
            continue;
        }
        let piece = match &mut stream {
            Some(s) => s.push(id)?,
            None => format!("{}{id}", if i > 0 { " " } else { "" }),
        };
        write!(out, "{piece}")?;
        out.flush()?;
    }
    let stats = generation.stats().clone();
    if args.json {
        let ids = generation.new_tokens();
        let mut json = serde_json::to_value(&stats)?;
        json["ids"] = serde_json::json!(ids);
        if let Some(tok) = tokenizer {
            json["text"] = serde_json::json!(decode(tok, ids)?);
        }
        json["acceptance_rate"] = serde_json::json!(stats.acceptance_rate());
        json["tokens_per_forward"] = serde_json::json!(stats.tokens_per_forward());
        json["prefill_tokens_per_sec"] = serde_json::json!(stats.prefill_tokens_per_sec());
        json["decode_tokens_per_sec"] = serde_json::json!(stats.decode_tokens_per_sec());
        writeln!(out, "{}", serde_json::to_string(&json)?)?;
    } else {
        if let Some(s) = &mut stream {
            write!(out, "{}", s.finish()?)?;
        }
        writeln!(out)?;
        eprintln!("{}", summary(&stats, args.speculative.is_some()));
    }
    Ok(())
}

/// The one-line summary on stderr.
fn summary(s: &GenerationStats, speculative: bool) -> String {
    let stop = match s.stop {
        Some(v3lab::generate::Stop::Eos) => "end of sequence",
        _ => "token limit",
    };
    let mut line = format!(
        "prompt {} tokens, {} new ({stop}); prefill {:.0} tokens/s, decode {:.1} tokens/s",
        s.prompt_tokens,
        s.new_tokens,
        s.prefill_tokens_per_sec(),
        s.decode_tokens_per_sec()
    );
    if speculative {
        line += &format!(
            "; MTP acceptance {:.1}% ({}/{} drafts), {:.2} tokens per main forward",
            100.0 * s.acceptance_rate(),
            s.accepted,
            s.drafted,
            s.tokens_per_forward()
        );
    }
    line
}
