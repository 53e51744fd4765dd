//! Deployment arithmetic (DeepSeek-V3 §3.2.2, §3.4): what one GPU of a prefill or decode
//! unit holds and moves, from a model's configuration, the paper's units as defaults and
//! the hardware as parameters. Back-of-envelope numbers at peak rates, not a simulation.
//!
//! | the paper says | here |
//! |---|---|
//! | "NVLink offers a bandwidth of 160 GB/s, roughly 3.2 times that of IB (50 GB/s)" (§3.2.2) | [`Hardware::h800`], [`experts_per_node_for_one_ib_hop`] |
//! | "we limit each token to be dispatched to at most 4 nodes" (§3.2.2); M = 4 (§4.2) | [`Unit::max_nodes_per_token`], [`AllToAll::per_token`] |
//! | "each token can efficiently select an average of 3.2 experts per node … a maximum of 13 experts (4 nodes × 3.2 experts/node) while preserving the same communication cost" (§3.2.2) | [`experts_per_node_for_one_ib_hop`], [`max_experts_at_the_cost_of_m_ib_hops`] |
//! | activations quantized to FP8 before dispatch, combine kept in BF16 (§3.3.4) | [`AllToAll::dispatch_bytes`], [`AllToAll::combine_bytes`] |
//! | prefill unit: 4 nodes, 32 GPUs, attention TP4 + SP with DP8, MoE EP32, dense MLPs of the shallow layers TP1, 32 redundant experts: "besides the original 8 experts it hosts, it will also host one additional redundant expert" (§3.4.1) | [`Unit::prefill`], [`WeightsPerGpu`] |
//! | decode unit: 40 nodes, 320 GPUs, attention TP4 + SP with DP80, MoE EP320, "each GPU hosts only one expert, and 64 GPUs are responsible for hosting redundant experts and shared experts"; the shared expert counts as a routed one, "each token will select 9 experts" (§3.4.2) | [`Unit::decode`] |
//! | decode dispatch and combine "via direct point-to-point transfers over IB" (§3.4.2) | [`Routing::PointToPoint`] |
//! | two micro-batches overlapped, one's computation hiding the other's all-to-all (§3.4.1, §3.4.2) | [`MicroBatch`]: computation against communication |
//! | decode: "the batch size per expert is relatively small (usually within 256 tokens), and the bottleneck is memory access rather than computation" (§3.4.2) | [`MicroBatch::expert_weight_read_s`] against [`MicroBatch::expert_compute_s`] |
//!
//! What the paper leaves open is an explicit assumption here, named where it is made: the
//! shared expert and the router live with every attention rank in prefill; the embedding
//! and output head are split like attention (TP); MLA's latent cache is held whole by each
//! TP rank of a DP group (every head reads all of it); an all-to-all transfer's payload is
//! one token's hidden vector (no headers), and a target on the sender's own node or GPU
//! is still counted (an upper bound).

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Link and chip figures. [`Hardware::h800`]: the paper's NVLink and InfiniBand figures
/// (§3.2.2); FLOP/s, HBM size and bandwidth are the H800 SXM's published dense peaks, which
/// the paper does not state.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Hardware {
    /// Bytes per second one GPU moves over NVLink.
    pub nvlink_bytes_per_s: f64,
    /// Bytes per second one GPU moves over InfiniBand (its own NIC).
    pub ib_bytes_per_s: f64,
    pub fp8_flop_per_s: f64,
    pub bf16_flop_per_s: f64,
    pub hbm_bytes: f64,
    pub hbm_bytes_per_s: f64,
    pub gpus_per_node: usize,
}

impl Hardware {
    /// 160 GB/s NVLink, 50 GB/s IB, 8 GPUs a node (§3.1, §3.2.2); 1979 / 989 TFLOP/s dense
    /// FP8 / BF16, 80 GB of HBM at 3.35 TB/s (H800 SXM datasheet).
    pub fn h800() -> Self {
        Hardware {
            nvlink_bytes_per_s: 160e9,
            ib_bytes_per_s: 50e9,
            fp8_flop_per_s: 1979e12,
            bf16_flop_per_s: 989e12,
            hbm_bytes: 80e9,
            hbm_bytes_per_s: 3.35e12,
            gpus_per_node: 8,
        }
    }

    fn check(&self) -> Result<()> {
        let figures = [
            ("--nvlink-gbps", self.nvlink_bytes_per_s),
            ("--ib-gbps", self.ib_bytes_per_s),
            ("--fp8-tflops", self.fp8_flop_per_s),
            ("--bf16-tflops", self.bf16_flop_per_s),
            ("--hbm-gb", self.hbm_bytes),
            ("--hbm-tbps", self.hbm_bytes_per_s),
        ];
        for (flag, value) in figures {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::setting(flag, format!("must be a positive number, got {value}")));
            }
        }
        if self.gpus_per_node == 0 {
            return Err(Error::setting("--gpus-per-node", "must be at least 1"));
        }
        Ok(())
    }
}

/// Experts a token can reach on one node for the time its one IB transfer to that node
/// takes: the forwarding GPU sends each copy on over NVLink, so NVLink / IB of them (3.2).
pub fn experts_per_node_for_one_ib_hop(hw: &Hardware) -> f64 {
    hw.nvlink_bytes_per_s / hw.ib_bytes_per_s
}

/// The most experts a token could select at the communication cost of `m` IB transfers
/// (the paper: 4 × 3.2 = 12.8, "a maximum of 13 experts").
pub fn max_experts_at_the_cost_of_m_ib_hops(hw: &Hardware, m: usize) -> f64 {
    m as f64 * experts_per_node_for_one_ib_hop(hw)
}

/// How tokens reach their experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Routing {
    /// Over IB to the same-index GPU of each target node, then over NVLink to the experts'
    /// GPUs (training and prefill, §3.2.2, §3.4.1).
    IbThenNvlink,
    /// Directly to each expert's GPU over IB (decode, §3.4.2).
    PointToPoint,
}

/// A deployment unit: how many GPUs, and how attention and experts are split over them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Unit {
    pub name: &'static str,
    pub gpus: usize,
    /// Attention tensor parallelism (with sequence parallelism) within a data-parallel group.
    pub attention_tp: usize,
    /// Expert parallelism: the GPUs the experts of a layer are spread over.
    pub expert_parallel: usize,
    /// Expert slots beyond the routed experts: redundant copies (and, in decode, the shared
    /// expert's copies).
    pub extra_expert_slots: usize,
    /// The shared expert runs as one more routed expert (decode) instead of beside attention.
    pub shared_as_routed: bool,
    /// Tensor parallelism of the dense MLPs of the first layers.
    pub dense_mlp_tp: usize,
    pub max_nodes_per_token: usize,
    pub routing: Routing,
}

impl Unit {
    /// §3.4.1: 32 GPUs, TP4 + SP with DP8, EP32, 32 redundant experts, dense MLPs TP1.
    pub fn prefill() -> Self {
        Unit {
            name: "prefill",
            gpus: 32,
            attention_tp: 4,
            expert_parallel: 32,
            extra_expert_slots: 32,
            shared_as_routed: false,
            dense_mlp_tp: 1,
            max_nodes_per_token: 4,
            routing: Routing::IbThenNvlink,
        }
    }

    /// §3.4.2: 320 GPUs, TP4 + SP with DP80, EP320, one expert per GPU, 64 GPUs for the
    /// redundant and shared experts, the shared expert routed. The paper does not give the
    /// dense MLPs' split in decode; TP1 as in prefill.
    pub fn decode() -> Self {
        Unit {
            name: "decode",
            gpus: 320,
            attention_tp: 4,
            expert_parallel: 320,
            extra_expert_slots: 64,
            shared_as_routed: true,
            dense_mlp_tp: 1,
            max_nodes_per_token: 4,
            routing: Routing::PointToPoint,
        }
    }

    /// Attention data-parallel groups (8 in prefill, 80 in decode).
    pub fn attention_dp(&self) -> usize {
        self.gpus / self.attention_tp
    }

    /// Expert slots one GPU holds per MoE layer (9 in prefill, 1 in decode).
    pub fn experts_per_gpu(&self, cfg: &ModelConfig) -> usize {
        (cfg.n_routed_experts + self.extra_expert_slots) / self.expert_parallel
    }

    /// Experts each token is sent to (8 in prefill, 9 in decode).
    pub fn experts_per_token(&self, cfg: &ModelConfig) -> usize {
        cfg.n_activated_experts + if self.shared_as_routed { cfg.n_shared_experts } else { 0 }
    }

    fn check(&self, cfg: &ModelConfig, hw: &Hardware) -> Result<()> {
        let name = self.name;
        let fail = |flag: &'static str, msg: String| Err(Error::setting(flag, format!("{name}: {msg}")));
        if self.gpus == 0 || self.attention_tp == 0 || self.expert_parallel == 0 || self.dense_mlp_tp == 0 {
            return fail("--gpus", "GPU counts and parallel sizes must be at least 1".into());
        }
        if !self.gpus.is_multiple_of(self.attention_tp) {
            return fail(
                "--attention-tp",
                format!("{} GPUs do not split into TP{} groups", self.gpus, self.attention_tp),
            );
        }
        if self.expert_parallel > self.gpus {
            return fail("--expert-parallel", format!("EP{} is larger than {} GPUs", self.expert_parallel, self.gpus));
        }
        let slots = cfg.n_routed_experts + self.extra_expert_slots;
        if !slots.is_multiple_of(self.expert_parallel) {
            return fail(
                "--redundant-experts",
                format!(
                    "{} routed + {} extra expert slots do not divide among EP{}",
                    cfg.n_routed_experts, self.extra_expert_slots, self.expert_parallel
                ),
            );
        }
        if !self.gpus.is_multiple_of(hw.gpus_per_node) {
            return fail("--gpus-per-node", format!("{} GPUs are not whole nodes of {}", self.gpus, hw.gpus_per_node));
        }
        Ok(())
    }
}

/// Parameter counts of one block's parts and of the whole model (main model, no MTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ParameterCounts {
    /// MLA's projections of one layer with its two latent norms (the block's norms excluded).
    pub attention_per_layer: usize,
    pub dense_mlp: usize,
    pub routed_expert: usize,
    pub shared_experts: usize,
    /// The router's weights (and selection bias) of one MoE layer.
    pub router: usize,
    pub embedding: usize,
    pub head: usize,
    pub dense_layers: usize,
    pub moe_layers: usize,
    pub total: usize,
}

impl ParameterCounts {
    pub fn of(cfg: &ModelConfig) -> Self {
        let d = cfg.dim;
        let heads = cfg.n_heads;
        let query = match cfg.q_lora_rank {
            Some(r) => r * d + r + heads * cfg.qk_head_dim() * r,
            None => heads * cfg.qk_head_dim() * d,
        };
        let kv = (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * d
            + cfg.kv_lora_rank
            + heads * (cfg.qk_nope_head_dim + cfg.v_head_dim) * cfg.kv_lora_rank;
        let attention_per_layer = query + kv + d * heads * cfg.v_head_dim;
        let mlp = |width: usize| 3 * d * width;
        let moe_layers = (0..cfg.n_layers).filter(|&l| cfg.is_moe_layer(l)).count();
        let dense_layers = cfg.n_layers - moe_layers;
        let router = cfg.n_routed_experts * d + if cfg.selection_bias { cfg.n_routed_experts } else { 0 };
        let (routed_expert, shared_experts) = (mlp(cfg.moe_inter_dim), mlp(cfg.n_shared_experts * cfg.moe_inter_dim));
        let norms = cfg.n_layers * 2 * d + d;
        let head = if cfg.tie_word_embeddings { 0 } else { cfg.vocab_size * d };
        let total = cfg.vocab_size * d
            + head
            + norms
            + cfg.n_layers * attention_per_layer
            + dense_layers * mlp(cfg.inter_dim)
            + moe_layers * (cfg.n_routed_experts * routed_expert + shared_experts + router);
        ParameterCounts {
            attention_per_layer,
            dense_mlp: mlp(cfg.inter_dim),
            routed_expert,
            shared_experts,
            router,
            embedding: cfg.vocab_size * d,
            head,
            dense_layers,
            moe_layers,
            total,
        }
    }
}

/// Bytes of one value in each place.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Precision {
    /// The blocks' matrices (1: FP8 E4M3 as released; their 128×128 block scales add 0.02%
    /// and are left out).
    pub weight_bytes: f64,
    /// Embedding and output head (2: BF16 in the release).
    pub embedding_bytes: f64,
    /// One value of MLA's cache (2: BF16).
    pub kv_bytes: f64,
}

impl Default for Precision {
    fn default() -> Self {
        Precision { weight_bytes: 1.0, embedding_bytes: 2.0, kv_bytes: 2.0 }
    }
}

/// Bytes of weights on one GPU of a unit, by part.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WeightsPerGpu {
    /// Every layer's attention, split TP ways.
    pub attention: f64,
    /// The dense MLPs of the first layers, split `dense_mlp_tp` ways.
    pub dense_mlps: f64,
    /// The routed (and redundant, and in decode shared) expert slots of every MoE layer.
    pub experts: f64,
    /// Prefill: the shared expert and router of every MoE layer, beside attention
    /// (assumed); decode: the router only.
    pub shared_and_router: f64,
    /// Embedding and head, split TP ways (assumed).
    pub embedding_and_head: f64,
    pub total: f64,
}

impl WeightsPerGpu {
    pub fn of(cfg: &ModelConfig, unit: &Unit, precision: &Precision) -> Self {
        let p = ParameterCounts::of(cfg);
        let w = precision.weight_bytes;
        let attention = (cfg.n_layers * p.attention_per_layer) as f64 * w / unit.attention_tp as f64;
        let dense_mlps = (p.dense_layers * p.dense_mlp) as f64 * w / unit.dense_mlp_tp as f64;
        let experts = (p.moe_layers * unit.experts_per_gpu(cfg) * p.routed_expert) as f64 * w;
        let shared = if unit.shared_as_routed { 0 } else { p.shared_experts };
        let shared_and_router = (p.moe_layers * (shared + p.router)) as f64 * w;
        let embedding_and_head = (p.embedding + p.head) as f64 * precision.embedding_bytes / unit.attention_tp as f64;
        let total = attention + dense_mlps + experts + shared_and_router + embedding_and_head;
        WeightsPerGpu { attention, dense_mlps, experts, shared_and_router, embedding_and_head, total }
    }
}

/// MLA's cache of one token over all layers, in bytes: (d_c + d_h^R) values a layer (§2.1.1).
pub fn kv_cache_bytes_per_token(cfg: &ModelConfig, precision: &Precision) -> f64 {
    (cfg.n_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)) as f64 * precision.kv_bytes
}

/// Bytes one token moves through the all-to-all of one MoE layer, forward.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AllToAll {
    /// One dispatched copy: the hidden vector in FP8 plus one f32 scale per 128 values.
    pub dispatch_bytes: f64,
    /// One combined result: the hidden vector in BF16.
    pub combine_bytes: f64,
    /// Copies over IB (one per target node other than its own with IB-then-NVLink routing;
    /// one per expert with point-to-point routing), at most.
    pub ib_copies: usize,
    /// Copies forwarded over NVLink inside the target nodes, at most.
    pub nvlink_copies: usize,
    /// Dispatch and combine bytes over IB.
    pub ib_bytes: f64,
    pub nvlink_bytes: f64,
}

impl AllToAll {
    pub fn per_token(cfg: &ModelConfig, unit: &Unit, hw: &Hardware) -> Self {
        let d = cfg.dim as f64;
        let dispatch_bytes = d + (cfg.dim.div_ceil(128) * 4) as f64;
        let combine_bytes = 2.0 * d;
        let experts = unit.experts_per_token(cfg);
        let nodes = unit.gpus / hw.gpus_per_node;
        let (ib_copies, nvlink_copies) = match unit.routing {
            // At most M nodes, one of which may be the sender's own: no IB hop to it.
            Routing::IbThenNvlink => (unit.max_nodes_per_token.min(nodes.saturating_sub(1)).min(experts), experts),
            Routing::PointToPoint => (experts, 0),
        };
        let per_copy = dispatch_bytes + combine_bytes;
        AllToAll {
            dispatch_bytes,
            combine_bytes,
            ib_copies,
            nvlink_copies,
            ib_bytes: ib_copies as f64 * per_copy,
            nvlink_bytes: nvlink_copies as f64 * per_copy,
        }
    }
}

/// One micro-batch through one MoE layer on one GPU, at peak rates: the computation that
/// overlaps the other micro-batch's all-to-all, and that all-to-all.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MicroBatch {
    /// Tokens each GPU contributes to the micro-batch (its attention share).
    pub tokens_per_gpu: f64,
    /// Tokens each expert slot receives (tokens × experts per token / slots, balanced).
    pub tokens_per_expert: f64,
    /// Positions each token attends to (on average).
    pub context: f64,
    pub attention_flop: f64,
    pub expert_flop: f64,
    pub compute_s: f64,
    /// The expert slots' GEMMs alone at FP8 peak.
    pub expert_compute_s: f64,
    /// Reading the GPU's expert weights of the layer once from HBM.
    pub expert_weight_read_s: f64,
    pub ib_s: f64,
    pub nvlink_s: f64,
    /// The slower of the two links (they run at once, §3.2.2).
    pub communication_s: f64,
}

impl MicroBatch {
    /// `tokens_per_gpu` tokens per GPU attending to `context` positions each. Attention's
    /// projections and the experts' GEMMs run at FP8 peak, attention's scores and weighted
    /// values at BF16 peak; TP + SP splits a DP group's attention evenly over its GPUs.
    pub fn of(
        cfg: &ModelConfig,
        unit: &Unit,
        hw: &Hardware,
        precision: &Precision,
        tokens_per_gpu: f64,
        context: f64,
    ) -> Self {
        let p = ParameterCounts::of(cfg);
        let projections = 2.0 * p.attention_per_layer as f64;
        // Scores over qk_head_dim and the weighted sum over v_head_dim, per head and position.
        let core = 2.0 * (cfg.n_heads * (cfg.qk_head_dim() + cfg.v_head_dim)) as f64 * context;
        let attention_flop = tokens_per_gpu * (projections + core);
        let slots = (cfg.n_routed_experts + unit.extra_expert_slots) as f64;
        let pairs = tokens_per_gpu * unit.gpus as f64 * unit.experts_per_token(cfg) as f64;
        let tokens_per_expert = pairs / slots;
        let slot_flop = unit.experts_per_gpu(cfg) as f64 * tokens_per_expert * 2.0 * p.routed_expert as f64;
        let shared_flop = if unit.shared_as_routed { 0.0 } else { tokens_per_gpu * 2.0 * p.shared_experts as f64 };
        let expert_flop = slot_flop + shared_flop;
        let expert_compute_s = slot_flop / hw.fp8_flop_per_s;
        let compute_s = (tokens_per_gpu * projections + expert_flop) / hw.fp8_flop_per_s
            + tokens_per_gpu * core / hw.bf16_flop_per_s;
        let expert_weight_read_s =
            (unit.experts_per_gpu(cfg) * p.routed_expert) as f64 * precision.weight_bytes / hw.hbm_bytes_per_s;
        let a2a = AllToAll::per_token(cfg, unit, hw);
        let ib_s = tokens_per_gpu * a2a.ib_bytes / hw.ib_bytes_per_s;
        let nvlink_s = tokens_per_gpu * a2a.nvlink_bytes / hw.nvlink_bytes_per_s;
        MicroBatch {
            tokens_per_gpu,
            tokens_per_expert,
            context,
            attention_flop,
            expert_flop,
            compute_s,
            expert_compute_s,
            expert_weight_read_s,
            ib_s,
            nvlink_s,
            communication_s: ib_s.max(nvlink_s),
        }
    }
}

/// Everything `v3lab plan` prints for one unit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub unit: Unit,
    pub attention_dp: usize,
    pub experts_per_gpu: usize,
    pub experts_per_token: usize,
    pub weights: WeightsPerGpu,
    pub kv_cache_bytes_per_token: f64,
    /// Tokens of cache that fit in what HBM the weights leave (per GPU, and so per DP
    /// group, whose TP ranks each hold the whole latent cache).
    pub kv_cache_tokens_per_gpu: f64,
    pub all_to_all: AllToAll,
    pub micro_batch: MicroBatch,
}

impl Plan {
    /// Checks the unit against the model and hardware, then does the arithmetic.
    pub fn of(
        cfg: &ModelConfig,
        unit: &Unit,
        hw: &Hardware,
        precision: &Precision,
        tokens_per_gpu: f64,
        context: f64,
    ) -> Result<Self> {
        hw.check()?;
        unit.check(cfg, hw)?;
        for (flag, value) in [("--tokens-per-gpu", tokens_per_gpu), ("--context", context)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::setting(flag, format!("must be a non-negative number, got {value}")));
            }
        }
        let weights = WeightsPerGpu::of(cfg, unit, precision);
        let kv = kv_cache_bytes_per_token(cfg, precision);
        Ok(Plan {
            unit: *unit,
            attention_dp: unit.attention_dp(),
            experts_per_gpu: unit.experts_per_gpu(cfg),
            experts_per_token: unit.experts_per_token(cfg),
            weights,
            kv_cache_bytes_per_token: kv,
            kv_cache_tokens_per_gpu: ((hw.hbm_bytes - weights.total) / kv).max(0.0),
            all_to_all: AllToAll::per_token(cfg, unit, hw),
            micro_batch: MicroBatch::of(cfg, unit, hw, precision, tokens_per_gpu, context),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> ModelConfig {
        let text = include_str!("../../configs/deepseek-v3/config.json");
        ModelConfig::from_json(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn nvlink_over_ib_is_the_papers_3_2_experts_per_node_and_13_experts_in_all() {
        // §3.2.2: "roughly 3.2 times"; "a maximum of 13 experts (4 nodes × 3.2 experts/node)".
        let hw = Hardware::h800();
        assert!((experts_per_node_for_one_ib_hop(&hw) - 3.2).abs() < 1e-12);
        let most = max_experts_at_the_cost_of_m_ib_hops(&hw, 4);
        assert!((most - 12.8).abs() < 1e-12 && most.round() == 13.0, "{most}");
    }

    #[test]
    fn units_hold_the_experts_the_paper_gives() {
        let cfg = v3();
        // §3.4.1: EP32, "besides the original 8 experts it hosts, … one additional redundant expert"; DP8.
        let prefill = Unit::prefill();
        assert_eq!(cfg.n_routed_experts / prefill.expert_parallel, 8);
        assert_eq!(prefill.experts_per_gpu(&cfg), 9);
        assert_eq!(prefill.attention_dp(), 8);
        assert_eq!(prefill.experts_per_token(&cfg), 8);
        // §3.4.2: "each GPU hosts only one expert", 64 GPUs for redundant and shared experts,
        // "each token will select 9 experts"; DP80 over 320 GPUs.
        let decode = Unit::decode();
        assert_eq!(decode.experts_per_gpu(&cfg), 1);
        assert_eq!(decode.gpus - cfg.n_routed_experts, 64);
        assert_eq!(decode.experts_per_token(&cfg), 9);
        assert_eq!(decode.attention_dp(), 80);
    }

    #[test]
    fn parameter_counts_sum_to_the_papers_671b() {
        let cfg = v3();
        let p = ParameterCounts::of(&cfg);
        // Abstract / §4.2: 671B total (MTP excluded); the reference's own shape walk agrees.
        assert!((p.total as f64 - 671e9).abs() < 0.001 * 671e9, "{}", p.total);
        let shapes = crate::Params::shapes(&cfg, Default::default()).counts(&cfg);
        assert_eq!(p.total, shapes.total);
        // §4.2: experts of intermediate dim 2048 on a hidden dim of 7168, 58 MoE layers.
        assert_eq!(p.routed_expert, 3 * 7168 * 2048);
        assert_eq!((p.dense_layers, p.moe_layers), (3, 58));
    }

    #[test]
    fn all_to_all_follows_node_limited_routing() {
        let (cfg, hw) = (v3(), Hardware::h800());
        // Prefill: 4 nodes, so at most 3 IB hops (the fourth node is the sender's own), 8
        // NVLink forwards; FP8 dispatch of 7168 values + 56 scales, BF16 combine.
        let prefill = AllToAll::per_token(&cfg, &Unit::prefill(), &hw);
        assert_eq!((prefill.ib_copies, prefill.nvlink_copies), (3, 8));
        assert_eq!((prefill.dispatch_bytes, prefill.combine_bytes), (7168.0 + 224.0, 14336.0));
        assert_eq!(prefill.ib_bytes, 3.0 * 21728.0);
        // Decode: point to point over IB, one copy per expert of the 9.
        let decode = AllToAll::per_token(&cfg, &Unit::decode(), &hw);
        assert_eq!((decode.ib_copies, decode.nvlink_copies), (9, 0));
        // Training's EP64 over 8 nodes (§3.2.2): 4 IB hops, and at 3.2 experts per hop the
        // NVLink forwards of 8 experts take less time than the IB hops.
        let training = Unit { gpus: 64, expert_parallel: 64, extra_expert_slots: 0, ..Unit::prefill() };
        let t = MicroBatch::of(&cfg, &training, &hw, &Precision::default(), 1.0, 0.0);
        assert_eq!(AllToAll::per_token(&cfg, &training, &hw).ib_copies, 4);
        assert!(t.nvlink_s < t.ib_s && t.communication_s == t.ib_s);
    }

    #[test]
    fn decode_experts_are_memory_bound_at_256_tokens() {
        // §3.4.2: "usually within 256 tokens, and the bottleneck is memory access rather
        // than computation": 2 FLOP per FP8 weight byte and token, against the H800's
        // 1979 TFLOP/s over 3.35 TB/s (590 FLOP per byte), is memory-bound below 295 tokens.
        let (cfg, hw, unit) = (v3(), Hardware::h800(), Unit::decode());
        let tokens_per_gpu = 256.0 * 320.0 / (320.0 * 9.0);
        let m = MicroBatch::of(&cfg, &unit, &hw, &Precision::default(), tokens_per_gpu, 4096.0);
        assert!((m.tokens_per_expert - 256.0).abs() < 1e-9, "{}", m.tokens_per_expert);
        assert!(m.expert_weight_read_s > m.expert_compute_s, "{m:?}");
        let crossover = hw.fp8_flop_per_s / (2.0 * hw.hbm_bytes_per_s);
        assert!((crossover - 295.4).abs() < 0.1, "{crossover}");
    }

    #[test]
    fn weights_and_cache_per_gpu_are_the_parts_split_as_the_units_split_them() {
        let (cfg, hw, precision) = (v3(), Hardware::h800(), Precision::default());
        let p = ParameterCounts::of(&cfg);
        let w = WeightsPerGpu::of(&cfg, &Unit::prefill(), &precision);
        assert_eq!(w.experts, (58 * 9 * p.routed_expert) as f64);
        assert_eq!(w.attention, (61 * p.attention_per_layer) as f64 / 4.0);
        // MLA: 576 values per token and layer, BF16, 61 layers.
        assert_eq!(kv_cache_bytes_per_token(&cfg, &precision), 576.0 * 61.0 * 2.0);
        let plan = Plan::of(&cfg, &Unit::decode(), &hw, &precision, 28.4, 4096.0).unwrap();
        assert!(plan.weights.total < hw.hbm_bytes && plan.kv_cache_tokens_per_gpu > 0.0, "{plan:?}");
        let bad = Unit { extra_expert_slots: 30, ..Unit::prefill() };
        let err = Plan::of(&cfg, &bad, &hw, &precision, 1.0, 1.0).unwrap_err().to_string();
        assert!(err.contains("--redundant-experts"), "{err}");
    }
}
