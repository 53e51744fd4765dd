//! `v3lab inspect --checkpoint DIR`: the configuration, total and activated parameter
//! counts, and MLA's cache per token against plain multi-head attention (DeepSeek-V3
//! §2.1.1: the latent cache holds `(d_c + d_h^R)` values per token and layer, MHA
//! `2 n_h d_h`). Reads only headers: no weight is decoded.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use v3lab::checkpoint::Opened;
use v3lab::Params;

#[derive(Args)]
pub struct InspectArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let opened = Opened::open(&args.checkpoint)?;
    let cfg = &opened.config;
    let counts = Params::shapes(cfg, opened.layout).counts(cfg);
    let latent = cfg.kv_lora_rank + cfg.qk_rope_head_dim;
    // The paper's MHA baseline: n_h heads of d_h for keys and for values.
    let mha = 2 * cfg.n_heads * cfg.v_head_dim;
    let naive = cfg.n_heads * (cfg.qk_head_dim() + cfg.v_head_dim);
    let bf16 = 2;
    let report = json!({
        "checkpoint": opened.dir,
        "config": cfg.to_released_json(),
        "stored_dtypes": opened.dtype_counts(),
        "parameters": { "total": counts.total, "activated": counts.activated, "mtp": counts.mtp },
        "cache_values_per_token_per_layer": { "mla_latent": latent, "mha": mha, "naive_per_head_kv": naive },
        "cache_bytes_per_token_bf16": {
            "mla_latent": latent * bf16 * cfg.n_layers, "mha": mha * bf16 * cfg.n_layers, "naive_per_head_kv": naive * bf16 * cfg.n_layers,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let moe_layers = (0..cfg.n_layers).filter(|&l| cfg.is_moe_layer(l)).count();
    println!("checkpoint   {}", opened.dir.display());
    println!("stored as    {:?}", opened.dtype_counts());
    println!(
        "model        {} layers ({} dense, {} MoE), dim {}, {} heads, vocab {}, context {}",
        cfg.n_layers,
        cfg.n_layers - moe_layers,
        moe_layers,
        cfg.dim,
        cfg.n_heads,
        cfg.vocab_size,
        cfg.max_seq_len
    );
    println!(
        "MLA          q_lora_rank {:?}, kv_lora_rank {}, d_nope {}, d_rope {}, d_v {}, softmax scale {:.6}{}",
        cfg.q_lora_rank,
        cfg.kv_lora_rank,
        cfg.qk_nope_head_dim,
        cfg.qk_rope_head_dim,
        cfg.v_head_dim,
        cfg.softmax_scale(),
        cfg.yarn.map_or(String::new(), |y| format!(", YaRN ×{} from {}", y.factor, y.original_seq_len))
    );
    println!(
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
    println!("MTP          depth {}", cfg.n_mtp_layers);
    println!(
        "parameters   total {} ({}), activated per token {} ({}), MTP modules {} ({})",
        human(counts.total),
        counts.total,
        human(counts.activated),
        counts.activated,
        human(counts.mtp),
        counts.mtp
    );
    println!("KV cache per token and layer (values):");
    println!("  MLA latent (d_c + d_h^R)              {latent:>8}");
    println!("  multi-head attention (2 n_h d_h)       {mha:>8}  ({:.1}× the latent)", mha as f64 / latent as f64);
    println!("  this model's naive per-head K and V    {naive:>8}");
    println!(
        "KV cache per token, all {} layers, BF16: MLA {} bytes, MHA {} bytes",
        cfg.n_layers,
        latent * bf16 * cfg.n_layers,
        mha * bf16 * cfg.n_layers
    );
    Ok(())
}
