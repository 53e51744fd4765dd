//! What a configuration costs, in closed form and with checked arithmetic: parameter counts
//! (total, activated per token, MTP modules) and the bytes a run would hold, computed
//! without building a single shape, so that DeepSeek-V3's 671B (or an absurd 10¹⁵) is a
//! calculation, not an allocation.
//!
//! Every product names its factors: when one overflows, the error names the field that
//! drives it (the largest factor), and [`check_memory`] names the field whose part of the
//! model dominates what would not fit.

use super::ModelConfig;
use crate::error::{Error, Result};
use crate::params::Layout;

/// A count of values (or bytes) and the config field that scales it most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub what: &'static str,
    /// The (internal) field with the largest value among the factors.
    pub field: &'static str,
    pub values: u128,
}

/// Parameter counts of a model, and what they are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSizes {
    /// Every parameter of the main model (embedding, blocks, final norm, head).
    pub total: u64,
    /// Those one token passes through: the routed experts it is not sent to excluded.
    pub activated: u64,
    /// The multi-token-prediction modules on top.
    pub mtp: u64,
    /// `cos` and `sin` of the rotary table, `[max_seq_len, d_h^R / 2]` each.
    pub rope_table: u64,
    /// The largest contributions, for messages about memory.
    pub parts: Vec<Part>,
}

/// The largest address a 64-bit process can hold: a size beyond it cannot exist anywhere.
const ADDRESS_SPACE: u128 = isize::MAX as u128;

/// `Π factors`, or an error naming the largest factor's field.
fn product(what: &'static str, factors: &[(&'static str, usize)]) -> Result<Part> {
    let field = factors.iter().max_by_key(|f| f.1).map_or("dim", |f| f.0);
    let mut values: u128 = 1;
    for &(_, v) in factors {
        values = values.checked_mul(v as u128).ok_or_else(|| overflow(what, factors))?;
    }
    Ok(Part { what, field, values })
}

fn overflow(what: &str, factors: &[(&'static str, usize)]) -> Error {
    let (field, value) = factors.iter().max_by_key(|f| f.1).copied().unwrap_or(("dim", 0));
    let names: Vec<&str> = factors.iter().map(|f| f.0).collect();
    Error::config(field, format!("{value} makes the size of {what} ({}) overflow", names.join(" × ")))
}

/// Checked sums of parts, naming the largest part's field on overflow.
fn sum(what: &'static str, parts: &[Part]) -> Result<u128> {
    parts.iter().try_fold(0u128, |acc, p| {
        acc.checked_add(p.values).ok_or_else(|| {
            let big = parts.iter().max_by_key(|p| p.values).expect("a part");
            Error::config(big.field, format!("the size of {what} overflows (its largest part: {})", big.what))
        })
    })
}

fn times(p: Part, k: u128) -> Result<Part> {
    let values =
        p.values.checked_mul(k).ok_or_else(|| Error::config(p.field, format!("the size of {} overflows", p.what)))?;
    Ok(Part { values, ..p })
}

fn add(field: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_add(b).ok_or_else(|| Error::config(field, format!("{a} + {b} overflows")))
}

/// How many of the layers `lo..hi` are MoE: past the dense layers, every `freq`-th.
fn moe_layers_in(cfg: &ModelConfig, lo: u128, hi: u128) -> u128 {
    let freq = cfg.moe_layer_freq.max(1) as u128;
    let lo = lo.max(cfg.n_dense_layers as u128).min(hi);
    hi.div_ceil(freq) - lo.div_ceil(freq)
}

fn narrow(field: &'static str, what: &str, v: u128) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::config(field, format!("{what}: {v} parameters do not fit in 64 bits")))
}

impl ModelConfig {
    /// The field with the largest value among a stack of blocks' factors (its count first).
    fn largest_block_factor(&self, count_field: &'static str, count: usize) -> &'static str {
        let factors = [
            (count_field, count),
            ("dim", self.dim),
            ("n_heads", self.n_heads),
            ("n_routed_experts", self.n_routed_experts),
            ("moe_inter_dim", self.moe_inter_dim),
            ("inter_dim", self.inter_dim),
        ];
        factors.iter().max_by_key(|f| f.1).map_or(count_field, |f| f.0)
    }

    /// Parameter counts in closed form (what [`crate::params::Params::shapes`] would hold,
    /// without building it), or an error naming the field whose size overflows 64 bits.
    pub fn sizes(&self, layout: Layout) -> Result<ModelSizes> {
        let d = ("dim", self.dim);
        let heads = ("n_heads", self.n_heads);
        let qk = ("qk_head_dim", add("qk_nope_head_dim", self.qk_nope_head_dim, self.qk_rope_head_dim)?);
        let kv = ("kv_lora_rank", self.kv_lora_rank);
        let mut attention = vec![
            product(
                "attention",
                &[("kv_lora_rank", add("kv_lora_rank", self.kv_lora_rank, self.qk_rope_head_dim)?), d],
            )?,
            product("attention", &[kv])?,
            product(
                "attention",
                &[heads, ("qk_nope_head_dim", add("v_head_dim", self.qk_nope_head_dim, self.v_head_dim)?), kv],
            )?,
            product("attention", &[d, heads, ("v_head_dim", self.v_head_dim)])?,
            product("norms", &[("dim", 2), d])?,
        ];
        match self.q_lora_rank {
            Some(r) => {
                let r = ("q_lora_rank", r);
                attention.push(product("attention", &[r, d])?);
                attention.push(product("attention", &[r])?);
                attention.push(product("attention", &[heads, qk, r])?);
            }
            None => attention.push(product("attention", &[heads, qk, d])?),
        }
        let attention = Part { what: "attention", field: "n_heads", values: sum("attention", &attention)? };
        let dense_ffn = times(product("the dense FFNs", &[("inter_dim", self.inter_dim), d])?, 3)?;
        let expert = |n: usize| -> Result<Part> {
            times(
                product("the routed experts", &[("n_routed_experts", n), ("moe_inter_dim", self.moe_inter_dim), d])?,
                3,
            )
        };
        let shared = times(
            product(
                "the shared experts",
                &[("n_shared_experts", self.n_shared_experts), ("moe_inter_dim", self.moe_inter_dim), d],
            )?,
            3,
        )?;
        let gate = product("the gates", &[("n_routed_experts", self.n_routed_experts), d])?;
        let bias = Part { values: if self.selection_bias { self.n_routed_experts as u128 } else { 0 }, ..gate };
        let moe_all = sum("an MoE block", &[gate, bias, expert(self.n_routed_experts)?, shared])?;
        let moe_active = sum("an MoE block", &[gate, bias, expert(self.n_activated_experts)?, shared])?;
        // (all, activated) of `dense` dense and `moe` MoE blocks; an overflow names the
        // field of the largest per-block part.
        let blocks = |field_of_count: &'static str, dense: u128, moe: u128| -> Result<(u128, u128)> {
            let too_big = || {
                let field =
                    if moe_all > dense_ffn.values.max(attention.values) { "n_routed_experts" } else { field_of_count };
                Error::config(field, "the size of the blocks overflows")
            };
            let a = attention.values.checked_mul(dense + moe).ok_or_else(too_big)?;
            let g = dense_ffn.values.checked_mul(dense).ok_or_else(too_big)?;
            let all = moe_all.checked_mul(moe).and_then(|f| f.checked_add(a)?.checked_add(g)).ok_or_else(too_big)?;
            let active =
                moe_active.checked_mul(moe).and_then(|f| f.checked_add(a)?.checked_add(g)).ok_or_else(too_big)?;
            Ok((all, active))
        };
        let n_layers = self.n_layers as u128;
        let moe_main = moe_layers_in(self, 0, n_layers);
        let (main_blocks, main_blocks_active) = blocks("n_layers", n_layers - moe_main, moe_main)?;
        let vocab = ("vocab_size", self.vocab_size);
        let table = product("the embedding", &[vocab, d])?;
        let head = Part { what: "the output head", ..table };
        let norm = self.dim as u128;
        let layer_part = Part {
            what: "the blocks",
            field: self.largest_block_factor("n_layers", self.n_layers),
            values: main_blocks,
        };
        let total = sum("the model", &[table, head, layer_part, Part { values: norm, ..table }])?;
        let activated = sum(
            "the model",
            &[table, head, Part { values: main_blocks_active, ..layer_part }, Part { values: norm, ..table }],
        )?;

        let n_mtp = self.n_mtp_layers as u128;
        let mtp_end = n_layers.checked_add(n_mtp).ok_or_else(|| Error::config("n_mtp_layers", "overflows"))?;
        let moe_mtp = moe_layers_in(self, n_layers, mtp_end);
        let mtp_blocks = blocks("n_mtp_layers", n_mtp - moe_mtp, moe_mtp)?.0;
        let own = u128::from(layout.mtp_own_embed) + u128::from(layout.mtp_own_head);
        let per_module = product("an MTP module", &[("dim", 2), d, d])?.values + 3 * norm + own * table.values;
        let mtp = per_module.checked_mul(n_mtp).and_then(|v| v.checked_add(mtp_blocks)).ok_or_else(|| {
            Error::config("n_mtp_layers", format!("{} MTP modules overflow the model's size", self.n_mtp_layers))
        })?;
        let mtp_part = Part {
            what: "the MTP modules",
            field: self.largest_block_factor("n_mtp_layers", self.n_mtp_layers),
            values: mtp,
        };
        let rope = product(
            "the rotary table",
            &[("max_seq_len", self.max_seq_len), ("qk_rope_head_dim", self.qk_rope_head_dim)],
        )?;

        let all = sum("the model", &[Part { values: total, ..layer_part }, mtp_part, rope])?;
        if all.checked_mul(4).is_none_or(|bytes| bytes > ADDRESS_SPACE) {
            let parts = [table, layer_part, mtp_part, rope];
            let big = parts.iter().max_by_key(|p| p.values).expect("parts");
            return Err(Error::config(
                big.field,
                format!("{all} parameters (the largest part: {}) overflow a 64-bit address space in f32", big.what),
            ));
        }
        let mut parts = vec![table, head, layer_part, mtp_part, rope];
        parts.sort_by_key(|p| std::cmp::Reverse(p.values));
        Ok(ModelSizes {
            total: narrow("dim", "the model", total)?,
            activated: narrow("dim", "the model", activated)?,
            mtp: narrow("n_mtp_layers", "the MTP modules", mtp)?,
            rope_table: narrow("max_seq_len", "the rotary table", rope.values)?,
            parts,
        })
    }
}

/// What a run would hold in memory, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryNeed {
    pub bytes: u128,
    /// What the bytes are ("parameters, gradients and AdamW's moments in f32, ...").
    pub what: String,
    /// The field whose part dominates.
    pub field: &'static str,
}

/// Bytes for the weights in f32 (inference: logits, generation).
pub fn inference_need(cfg: &ModelConfig, layout: Layout, batch: usize, positions: usize) -> Result<MemoryNeed> {
    let sizes = cfg.sizes(layout)?;
    let weights = (sizes.total as u128 + sizes.mtp as u128 + sizes.rope_table as u128) * 4;
    let acts = activation_bytes(cfg, batch, positions);
    Ok(MemoryNeed {
        bytes: weights.saturating_add(acts),
        what: format!("the weights in f32 and the activations of {batch} × {positions} positions"),
        field: dominant(cfg, &sizes, acts, weights, ("batch", batch as u128 * positions as u128)),
    })
}

/// Bytes for training: weights, gradients and AdamW's two moments in f32, plus the
/// activations of one batch (an estimate from below: the tensors every layer keeps for its
/// backward).
pub fn training_need(cfg: &ModelConfig, layout: Layout, batch: usize, seq_len: usize) -> Result<MemoryNeed> {
    let sizes = cfg.sizes(layout)?;
    let state = (sizes.total as u128 + sizes.mtp as u128) * 16 + sizes.rope_table as u128 * 4;
    let acts = activation_bytes(cfg, batch, seq_len);
    Ok(MemoryNeed {
        bytes: state.saturating_add(acts),
        what: format!(
            "parameters, gradients and AdamW's moments in f32, and the activations of a batch of {batch} × {seq_len}"
        ),
        field: dominant(cfg, &sizes, acts, state, ("data.batch_size", batch as u128 * seq_len as u128)),
    })
}

fn dominant(
    cfg: &ModelConfig,
    sizes: &ModelSizes,
    acts: u128,
    weights: u128,
    batch: (&'static str, u128),
) -> &'static str {
    if acts > weights {
        // The largest factor of the activations: the batch, or the model's widths.
        let factors = [
            batch,
            ("vocab_size", cfg.vocab_size as u128),
            ("dim", cfg.dim as u128),
            ("n_heads", cfg.n_heads as u128),
            ("n_layers", cfg.n_layers as u128),
            ("n_mtp_layers", cfg.n_mtp_layers as u128),
        ];
        factors.iter().max_by_key(|f| f.1).map_or(batch.0, |f| f.0)
    } else {
        sizes.parts.first().map_or("dim", |p| p.field)
    }
}

/// The activations a forward keeps per position, summed over the blocks and the logits
/// (saturating: an absurd batch saturates rather than wraps).
fn activation_bytes(cfg: &ModelConfig, batch: usize, positions: usize) -> u128 {
    let tokens = (batch as u128).saturating_mul(positions as u128);
    let per_head = (cfg.qk_head_dim() as u128).saturating_add(cfg.v_head_dim as u128);
    let attention = (cfg.n_heads as u128).saturating_mul(per_head.saturating_mul(2).saturating_add(positions as u128));
    let experts =
        (cfg.n_activated_experts as u128 + cfg.n_shared_experts as u128).saturating_mul(cfg.moe_inter_dim as u128);
    let ffn = experts.max(cfg.inter_dim as u128).saturating_mul(3);
    let per_layer = (cfg.dim as u128).saturating_mul(8).saturating_add(attention).saturating_add(ffn);
    let layers = (cfg.n_layers as u128).saturating_add(cfg.n_mtp_layers as u128);
    let logits = (cfg.vocab_size as u128).saturating_mul(2).saturating_mul(1 + cfg.n_mtp_layers as u128);
    tokens.saturating_mul(per_layer.saturating_mul(layers).saturating_add(logits)).saturating_mul(4)
}

/// This machine's physical memory in bytes (Linux `/proc/meminfo`; None elsewhere).
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes in a human unit (powers of 1024).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Refuses a run that would need more than `machine` bytes (this machine's memory when
/// None), naming the field that dominates, the bytes and the memory; `override_flag` is
/// the option that skips this check, quoted in the message.
pub fn check_memory(need: &MemoryNeed, machine: Option<u64>, override_flag: &str) -> Result<()> {
    let Some(memory) = machine.or_else(machine_memory) else { return Ok(()) };
    if need.bytes <= memory as u128 {
        return Ok(());
    }
    Err(Error::config(
        super::field_names(need.field),
        format!(
            "the run would need about {} ({}) but this machine has {} of memory; {override_flag} tries anyway",
            human_bytes(need.bytes),
            need.what,
            human_bytes(memory as u128)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use serde_json::{json, Value};

    fn v3() -> Value {
        serde_json::from_str(include_str!("../../../configs/deepseek-v3/config.json")).unwrap()
    }

    fn with(mut base: Value, changes: Value) -> Value {
        for (k, v) in changes.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn small() -> Value {
        with(
            v3(),
            json!({"vocab_size": 50, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
                   "num_hidden_layers": 5, "first_k_dense_replace": 2, "num_attention_heads": 2, "n_routed_experts": 8,
                   "n_group": 2, "topk_group": 1, "num_experts_per_tok": 2, "q_lora_rank": 12, "kv_lora_rank": 8,
                   "qk_nope_head_dim": 4, "qk_rope_head_dim": 2, "v_head_dim": 4, "max_position_embeddings": 32,
                   "num_nextn_predict_layers": 2, "rope_scaling": null}),
        )
    }

    /// The closed form against the shapes of every tensor (two independent computations).
    #[test]
    fn closed_form_counts_equal_the_shapes_counts() {
        let variants = [
            small(),
            with(small(), json!({"q_lora_rank": null, "n_shared_experts": 0, "moe_layer_freq": 2})),
            with(small(), json!({"first_k_dense_replace": 5, "num_nextn_predict_layers": 0})),
            with(small(), json!({"topk_method": "greedy", "scoring_func": "softmax", "n_group": 1})),
            v3(),
        ];
        for value in variants {
            let cfg = ModelConfig::from_json(&value).unwrap();
            for layout in [Layout::default(), Layout { mtp_own_embed: true, mtp_own_head: true }] {
                let shapes = Params::shapes(&cfg, layout).counts(&cfg);
                let sizes = cfg.sizes(layout).unwrap();
                assert_eq!(
                    (sizes.total, sizes.activated, sizes.mtp),
                    (shapes.total as u64, shapes.activated as u64, shapes.mtp as u64),
                    "{value}"
                );
                assert_eq!(sizes.rope_table, (cfg.max_seq_len * cfg.qk_rope_head_dim) as u64);
            }
        }
    }

    /// DeepSeek-V3 (paper §1, release notes): 671B total, 37B activated, the MTP module 14B
    /// with the shared embedding and head (11.5B without them).
    #[test]
    fn deepseek_v3_is_a_calculation() {
        let s = ModelConfig::from_json(&v3()).unwrap().sizes(Layout::default()).unwrap();
        assert_eq!(s.total / 1_000_000_000, 671);
        // 37B activated: 36.7B without the embedding table, whose rows are looked up, not multiplied.
        let cfg = ModelConfig::from_json(&v3()).unwrap();
        // (the release notes' 36.7B, within the same 0.5% as notebook 00 allows: their rounding).
        let without_embedding = (s.activated - (cfg.vocab_size * cfg.dim) as u64) as f64;
        assert!((without_embedding / 36.7e9 - 1.0).abs() < 5e-3, "{without_embedding}");
        // A thousand times the experts: 10¹⁵ values is big, not an overflow.
        let huge = ModelConfig::from_json(&with(v3(), json!({"n_routed_experts": 256_000, "n_group": 8}))).unwrap();
        let h = huge.sizes(Layout::default()).unwrap();
        assert!(h.total > 600_000_000_000_000, "{h:?}");
        // A token still passes 8 experts; only the 58 MoE layers' gates and biases grow.
        assert_eq!(h.activated, s.activated + 58 * (256_000 - 256) * (7168 + 1));
    }

    fn refusal(changes: Value) -> String {
        ModelConfig::from_json(&with(small(), changes)).unwrap_err().to_string()
    }

    #[test]
    fn overflowing_sizes_are_refused_naming_the_field() {
        let cases = [
            (json!({"hidden_size": 1u64 << 60}), "hidden_size"),
            (json!({"hidden_size": u64::MAX}), "hidden_size"),
            (json!({"intermediate_size": u64::MAX}), "intermediate_size"),
            (json!({"vocab_size": 1u64 << 62}), "vocab_size"),
            (json!({"num_nextn_predict_layers": u64::MAX}), "num_nextn_predict_layers"),
            (json!({"num_hidden_layers": u64::MAX}), "num_hidden_layers"),
            (json!({"max_position_embeddings": u64::MAX}), "max_position_embeddings"),
        ];
        for (change, field) in cases {
            let msg = refusal(change.clone());
            assert!(msg.contains(&format!("`{field}`")) && msg.contains("overflow"), "{change}: {msg}");
        }
    }

    #[test]
    fn memory_refusals_name_the_field_the_bytes_and_the_memory() {
        let cfg = |changes| ModelConfig::from_json(&with(small(), changes)).unwrap();
        let gib = 1u64 << 30;
        let fits = training_need(&cfg(json!({})), Layout::default(), 4, 16).unwrap();
        assert!(check_memory(&fits, Some(gib), "--force").is_ok());
        for (change, field) in [
            (json!({"hidden_size": 1_000_000_000u64, "num_nextn_predict_layers": 0}), "hidden_size"),
            (json!({"vocab_size": 1_000_000_000_000u64}), "vocab_size"),
            (json!({"n_routed_experts": 1_000_000_000u64, "n_group": 1}), "n_routed_experts"),
            (json!({"num_hidden_layers": 1_000_000_000u64}), "num_hidden_layers"),
            (json!({"num_attention_heads": 1_000_000_000u64}), "num_attention_heads"),
            (json!({"max_position_embeddings": 1_000_000_000_000_000u64}), "max_position_embeddings"),
            (json!({"num_nextn_predict_layers": 1_000_000u64}), "num_nextn_predict_layers"),
        ] {
            let need = training_need(&cfg(change.clone()), Layout::default(), 4, 16).unwrap();
            let msg = check_memory(&need, Some(gib), "--force").unwrap_err().to_string();
            assert!(msg.contains(field) && msg.contains("1.0 GiB") && msg.contains("--force"), "{change}: {msg}");
        }
        let batch = training_need(&cfg(json!({})), Layout::default(), 1 << 40, 16).unwrap();
        assert!(check_memory(&batch, Some(gib), "--force").unwrap_err().to_string().contains("data.batch_size"));
    }
}
