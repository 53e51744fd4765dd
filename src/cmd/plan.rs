//! `v3lab plan --checkpoint DIR | --config FILE`: the deployment arithmetic of DeepSeek-V3
//! §3.2.2 and §3.4 (`v3lab::deploy`) for a model's `config.json`: weights and KV cache per
//! GPU, all-to-all bytes per token under node-limited routing, and computation against
//! communication per micro-batch, for the paper's prefill and decode units (or one unit
//! changed by flags) on hardware given by flags, with the paper's statements beside.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use v3lab::deploy::{
    experts_per_node_for_one_ib_hop, max_experts_at_the_cost_of_m_ib_hops, Hardware, Plan, Precision, Unit,
};
use v3lab::lab::Table;
use v3lab::{Error, ModelConfig};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("model").required(true).args(["checkpoint", "config"]))]
pub struct PlanArgs {
    /// A checkpoint folder; only its config.json is read.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// A config.json (released DeepSeek-V3 layout or the public ModelArgs one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// prefill, decode or both (the paper's two units, §3.4).
    #[arg(long, default_value = "both")]
    pub unit: String,
    /// GPUs of the unit (with --unit prefill or decode).
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Attention tensor parallelism (with --unit).
    #[arg(long)]
    pub attention_tp: Option<usize>,
    /// Expert parallelism (with --unit).
    #[arg(long)]
    pub expert_parallel: Option<usize>,
    /// Expert slots beyond the routed experts: redundant (and in decode shared) copies (with --unit).
    #[arg(long)]
    pub redundant_experts: Option<usize>,
    /// Most nodes a token is sent to (node-limited routing, M = 4 in the paper).
    #[arg(long, default_value_t = 4)]
    pub max_nodes: usize,
    /// NVLink bandwidth per GPU, GB/s (the paper: 160).
    #[arg(long, default_value_t = 160.0)]
    pub nvlink_gbps: f64,
    /// InfiniBand bandwidth per GPU, GB/s (the paper: 50).
    #[arg(long, default_value_t = 50.0)]
    pub ib_gbps: f64,
    /// Dense FP8 peak, TFLOP/s (H800 datasheet; the paper gives none).
    #[arg(long, default_value_t = 1979.0)]
    pub fp8_tflops: f64,
    /// Dense BF16 peak, TFLOP/s (H800 datasheet).
    #[arg(long, default_value_t = 989.0)]
    pub bf16_tflops: f64,
    /// HBM per GPU, GB (H800: 80).
    #[arg(long, default_value_t = 80.0)]
    pub hbm_gb: f64,
    /// HBM bandwidth, TB/s (H800: 3.35).
    #[arg(long, default_value_t = 3.35)]
    pub hbm_tbps: f64,
    /// GPUs per node (the paper's H800 nodes: 8).
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Bytes per weight of the blocks' matrices (1: FP8 as released).
    #[arg(long, default_value_t = 1.0)]
    pub weight_bytes: f64,
    /// Prefill micro-batch: tokens per GPU (v3lab's choice; the paper gives none).
    #[arg(long, default_value_t = 4096.0)]
    pub prefill_tokens_per_gpu: f64,
    /// Decode micro-batch: tokens per expert (the paper: "usually within 256 tokens").
    #[arg(long, default_value_t = 256.0)]
    pub decode_tokens_per_expert: f64,
    /// Sequence length: prefill tokens attend to half of it on average, decode tokens to all (4K in pre-training).
    #[arg(long, default_value_t = 4096.0)]
    pub context: f64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let path = match (&args.checkpoint, &args.config) {
        (Some(dir), _) => dir.join("config.json"),
        (None, Some(file)) => file.clone(),
        (None, None) => return Err(Error::setting("--config", "give --checkpoint DIR or --config FILE").into()),
    };
    let cfg = ModelConfig::from_file(&path)?;
    let hw = Hardware {
        nvlink_bytes_per_s: args.nvlink_gbps * 1e9,
        ib_bytes_per_s: args.ib_gbps * 1e9,
        fp8_flop_per_s: args.fp8_tflops * 1e12,
        bf16_flop_per_s: args.bf16_tflops * 1e12,
        hbm_bytes: args.hbm_gb * 1e9,
        hbm_bytes_per_s: args.hbm_tbps * 1e12,
        gpus_per_node: args.gpus_per_node,
    };
    let precision = Precision { weight_bytes: args.weight_bytes, ..Precision::default() };
    if !(args.weight_bytes.is_finite() && args.weight_bytes > 0.0) {
        return Err(Error::setting("--weight-bytes", "must be a positive number").into());
    }
    let units = match args.unit.as_str() {
        "both" => vec![Unit::prefill(), Unit::decode()],
        "prefill" => vec![Unit::prefill()],
        "decode" => vec![Unit::decode()],
        other => return Err(Error::setting("--unit", format!("`{other}` is not prefill, decode or both")).into()),
    };
    let overridden = args.gpus.is_some()
        || args.attention_tp.is_some()
        || args.expert_parallel.is_some()
        || args.redundant_experts.is_some();
    if overridden && units.len() > 1 {
        return Err(Error::setting("--unit", "--gpus, --attention-tp, --expert-parallel and --redundant-experts change one unit: add --unit prefill or --unit decode").into());
    }
    let mut plans = Vec::new();
    for unit in units {
        let unit = Unit {
            gpus: args.gpus.unwrap_or(unit.gpus),
            attention_tp: args.attention_tp.unwrap_or(unit.attention_tp),
            expert_parallel: args.expert_parallel.unwrap_or(unit.expert_parallel),
            extra_expert_slots: args.redundant_experts.unwrap_or(unit.extra_expert_slots),
            max_nodes_per_token: args.max_nodes,
            ..unit
        };
        // Prefill: a micro-batch of tokens per GPU over causal sequences (half the context
        // on average); decode: one new token per sequence, attending to the whole context,
        // as many as give each expert slot its tokens.
        let (tokens_per_gpu, context) = if unit.shared_as_routed {
            let slots = (cfg.n_routed_experts + unit.extra_expert_slots) as f64;
            let per_token = unit.experts_per_token(&cfg).max(1) as f64;
            (args.decode_tokens_per_expert * slots / (unit.gpus.max(1) as f64 * per_token), args.context)
        } else {
            (args.prefill_tokens_per_gpu, args.context / 2.0)
        };
        plans.push(Plan::of(&cfg, &unit, &hw, &precision, tokens_per_gpu, context)?);
    }
    let ratio = experts_per_node_for_one_ib_hop(&hw);
    let most = max_experts_at_the_cost_of_m_ib_hops(&hw, args.max_nodes);
    let text = if args.json {
        let doc = json!({
            "config": path, "hardware": hw, "precision": precision,
            "experts_per_node_for_one_ib_hop": ratio, "max_experts_at_the_cost_of_m_ib_hops": most,
            "plans": plans,
        });
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        render(&cfg, &hw, &plans, ratio, most, args.max_nodes)
    };
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / 1e9)
}

fn us(seconds: f64) -> String {
    format!("{:.1} µs", seconds * 1e6)
}

fn render(cfg: &ModelConfig, hw: &Hardware, plans: &[Plan], ratio: f64, most: f64, m: usize) -> String {
    let mut out = String::new();
    let links = Table::new("Node-limited routing (§3.2.2)", &["", "v3lab", "the paper"])
        .row([
            "experts per node for the cost of one IB hop (NVLink / IB)".to_string(),
            format!("{ratio:.2}"),
            "\"an average of 3.2 experts per node\"".into(),
        ])
        .row([
            format!("experts per token at the cost of {m} IB hops"),
            format!("{most:.1}"),
            "\"a maximum of 13 experts (4 nodes × 3.2 experts/node)\"".into(),
        ]);
    out += &links.to_string();
    for plan in plans {
        let u = &plan.unit;
        let w = &plan.weights;
        let a = &plan.all_to_all;
        let mb = &plan.micro_batch;
        let (said_unit, said_experts, said_a2a, said_mb) = if u.shared_as_routed {
            (
                "40 nodes, 320 GPUs; attention TP4 + SP, DP80; MoE EP320 (§3.4.2)",
                "\"each GPU hosts only one expert, and 64 GPUs are responsible for hosting redundant experts and shared experts\"; \"each token will select 9 experts\"",
                "\"direct point-to-point transfers over IB\"",
                "\"the batch size per expert is relatively small (usually within 256 tokens), and the bottleneck is memory access rather than computation\"",
            )
        } else {
            (
                "4 nodes, 32 GPUs; attention TP4 + SP, DP8; MoE EP32 (§3.4.1)",
                "\"besides the original 8 experts it hosts, it will also host one additional redundant expert\"",
                "IB to the target nodes, then NVLink; FP8 dispatch, BF16 combine (§3.2.2, §3.3.4)",
                "two micro-batches: \"overlapping the attention and MoE of one micro-batch with the dispatch and combine of another\"",
            )
        };
        let mut t = Table::new(
            format!(
                "{} unit: {} GPUs, TP{} × DP{}, EP{}",
                u.name, u.gpus, u.attention_tp, plan.attention_dp, u.expert_parallel
            ),
            &["per GPU", "v3lab", "the paper"],
        );
        t.push(["unit".to_string(), format!("{} GPUs of {}", u.gpus, hw.gpus_per_node), said_unit.to_string()]);
        t.push([
            "expert slots per MoE layer".to_string(),
            format!(
                "{} ({} routed + {} extra over EP{}); {} per token",
                plan.experts_per_gpu,
                cfg.n_routed_experts,
                u.extra_expert_slots,
                u.expert_parallel,
                plan.experts_per_token
            ),
            said_experts.to_string(),
        ]);
        t.push([
            "weights".to_string(),
            format!(
                "{} (attention {}, dense MLPs {}, experts {}, shared + router {}, embedding + head {})",
                gb(w.total),
                gb(w.attention),
                gb(w.dense_mlps),
                gb(w.experts),
                gb(w.shared_and_router),
                gb(w.embedding_and_head)
            ),
            "671B parameters, FP8 weights as released".into(),
        ]);
        t.push([
            "KV cache".to_string(),
            format!(
                "{:.1} KB per token; {:.0} tokens in the {} left",
                plan.kv_cache_bytes_per_token / 1e3,
                plan.kv_cache_tokens_per_gpu,
                gb(hw.hbm_bytes - w.total)
            ),
            "576 values per token and layer (MLA, §2.1.1)".into(),
        ]);
        t.push([
            "all-to-all per token and MoE layer".to_string(),
            format!(
                "≤ {} IB copies ({:.1} KB), ≤ {} NVLink copies ({:.1} KB); a copy: {:.0} B dispatch + {:.0} B combine",
                a.ib_copies,
                a.ib_bytes / 1e3,
                a.nvlink_copies,
                a.nvlink_bytes / 1e3,
                a.dispatch_bytes,
                a.combine_bytes
            ),
            said_a2a.to_string(),
        ]);
        t.push([
            "micro-batch per MoE layer".to_string(),
            format!(
                "{:.1} tokens per GPU ({:.0} per expert slot, context {:.0}): compute {} (experts {}, their weights read from HBM {}), communication {} (IB {}, NVLink {}); compute / communication {:.2}",
                mb.tokens_per_gpu, mb.tokens_per_expert, mb.context, us(mb.compute_s), us(mb.expert_compute_s), us(mb.expert_weight_read_s),
                us(mb.communication_s), us(mb.ib_s), us(mb.nvlink_s), mb.compute_s / mb.communication_s.max(f64::MIN_POSITIVE)
            ),
            said_mb.to_string(),
        ]);
        out += "\n";
        out += &t.to_string();
    }
    out += "\nAt peak FLOP/s and link rates, payloads only; assumptions: `v3lab::deploy`'s documentation.\n";
    out
}
