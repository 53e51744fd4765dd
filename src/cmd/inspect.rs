//! `v3lab inspect --checkpoint DIR`: the configuration, total and activated parameter
//! counts, and MLA's cache per token against plain multi-head attention (DeepSeek-V3
//! §2.1.1: the latent cache holds `(d_c + d_h^R)` values per token and layer, MHA
//! `2 n_h d_h`). Reads only headers: no weight is decoded.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use v3lab::checkpoint::{Opened, NO_WEIGHTS};
use v3lab::mla::CacheValues;
use v3lab::model::params::Layout;
use v3lab::model::params::ParamCounts;
use v3lab::{Error, ModelConfig};

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// BF16 bytes per token of a cache of `values` per layer, all layers (u128: no overflow).
fn cache_bytes(values: usize, cfg: &ModelConfig) -> u128 {
    values as u128 * 2 * cfg.n_layers as u128
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000_000 => format!("{:.2}T", n as f64 / 1e12),
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn run(args: &InspectArgs) -> Result<()> {
    // A folder with only config.json is inspected from the config (e.g. DeepSeek-V3's own
    // config without its 700 GB of weights); the MTP modules then share embedding and head.
    let (config, notes) = ModelConfig::from_file_with_notes(&args.checkpoint.join("config.json"))?;
    let opened = match Opened::open(&args.checkpoint) {
        Ok(opened) => Some(opened),
        Err(Error::Checkpoint { msg, .. }) if msg == NO_WEIGHTS => None,
        Err(e) => return Err(e.into()),
    };
    // With weights, what loading would load (MTP modules the weights lack are dropped).
    let (config, notes) = match &opened {
        Some(o) => (o.config.clone(), o.notes.clone()),
        None => (config, notes),
    };
    for note in &notes {
        eprintln!("note: {note}");
    }
    let cfg = &config;
    let layout = opened.as_ref().map_or(Layout::default(), |o| o.layout);
    let stored = opened.as_ref().map_or_else(Default::default, |o| o.dtype_counts());
    // In closed form: a calculator for any valid configuration, however large.
    let sizes = cfg.sizes(layout)?;
    let counts =
        ParamCounts { total: sizes.total as usize, activated: sizes.activated as usize, mtp: sizes.mtp as usize };
    let CacheValues { latent, mha, naive } = CacheValues::of(cfg);
    let report = json!({
        "checkpoint": args.checkpoint,
        "config": cfg.to_released_json(),
        "stored_dtypes": stored,
        "parameters": { "total": counts.total, "activated": counts.activated, "mtp": counts.mtp },
        "cache_values_per_token_per_layer": { "mla_latent": latent, "mha": mha, "naive_per_head_kv": naive },
        "cache_bytes_per_token_bf16": {
            "mla_latent": cache_bytes(latent, cfg), "mha": cache_bytes(mha, cfg), "naive_per_head_kv": cache_bytes(naive, cfg),
        },
    });
    let text =
        if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { render(args, cfg, &stored, counts) };
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

fn render(
    args: &InspectArgs,
    cfg: &ModelConfig,
    stored: &std::collections::BTreeMap<String, usize>,
    counts: ParamCounts,
) -> String {
    let CacheValues { latent, mha, naive } = CacheValues::of(cfg);
    let mut out = String::new();
    let o = &mut out;
    let moe_layers = (0..cfg.n_layers).filter(|&l| cfg.is_moe_layer(l)).count();
    let _ = writeln!(o, "checkpoint   {}", args.checkpoint.display());
    let _ = writeln!(
        o,
        "stored as    {}",
        if stored.is_empty() { "(no weights: config only)".to_string() } else { format!("{stored:?}") }
    );
    let _ = writeln!(
        o,
        "model        {} layers ({} dense, {} MoE), dim {}, {} heads, vocab {}, context {}",
        cfg.n_layers,
        cfg.n_layers - moe_layers,
        moe_layers,
        cfg.dim,
        cfg.n_heads,
        cfg.vocab_size,
        cfg.max_seq_len
    );
    let _ = writeln!(
        o,
        "MLA          q_lora_rank {:?}, kv_lora_rank {}, d_nope {}, d_rope {}, d_v {}, softmax scale {:.6}{}",
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.softmax_scale(),
        cfg.yarn.map_or(String::new(), |y| format!(", YaRN ×{} from {}", y.factor, y.original_seq_len))
    );
    let _ = writeln!(
        o,
        "MoE          {} routed (top {}, {} groups keep {}), {} shared, expert width {}, {:?} scores{}, route scale {}",
        cfg.n_routed_experts,
        cfg.n_activated_experts,
        cfg.n_expert_groups,
        cfg.n_limited_groups,
        cfg.n_shared_experts,
        cfg.moe_inter_dim,
        cfg.score_func,
        if cfg.selection_bias { " + selection bias" } else { "" },
        cfg.route_scale
    );
    let _ = writeln!(o, "MTP          depth {}", cfg.n_mtp_layers);
    let _ = writeln!(
        o,
        "parameters   total {} ({}), activated per token {} ({}; {} without the embedding table), MTP modules {} ({})",
        human(counts.total),
        counts.total,
        human(counts.activated),
        counts.activated,
        human(counts.activated - cfg.vocab_size * cfg.dim),
        human(counts.mtp),
        counts.mtp
    );
    let _ = writeln!(o, "KV cache per token and layer (values):");
    let _ = writeln!(o, "  MLA latent (d_c + d_h^R)              {latent:>8}");
    let _ = writeln!(
        o,
        "  multi-head attention (2 n_h d_h)       {mha:>8}  ({:.1}× the latent)",
        mha as f64 / latent as f64
    );
    let _ = writeln!(o, "  this model's naive per-head K and V    {naive:>8}");
    let _ = writeln!(
        o,
        "KV cache per token, all {} layers, BF16: MLA {} bytes, MHA {} bytes",
        cfg.n_layers,
        cache_bytes(latent, cfg),
        cache_bytes(mha, cfg)
    );
    out
}
