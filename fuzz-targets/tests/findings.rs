//! The fuzzers' findings (fuzz/README.md), each an input that once panicked or aborted,
//! committed in `fuzz/regressions/<target>/`: each must now give an error naming the
//! field or tensor at fault, or (a large but valid model) be a calculation that the
//! memory check refuses by name. (`replay.rs` runs them through the targets as well.)

use std::path::PathBuf;
use v3lab_reference::config::size::{check_memory, training_need};
use v3lab_reference::io::read_tokens;
use v3lab_reference::params::Layout;
use v3lab_reference::ModelConfig;

fn regression(target: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target).join(name)
}

fn config_error(name: &str) -> String {
    let path = regression("config_json", name);
    ModelConfig::from_file(&path).expect_err(name).to_string()
}

#[test]
fn overflowing_configs_are_errors_naming_the_field() {
    // n_routed_experts = 2³¹ at DeepSeek-V3's widths: more than a 64-bit address space.
    let e = config_error("experts-2-31-alloc-abort.json");
    assert!(e.contains("experts-2-31") && e.contains("n_routed_experts") && e.contains("overflow"), "{e}");
    // qk_nope_head_dim = 2⁶⁴−1: `qk_nope_head_dim + qk_rope_head_dim` overflowed.
    let e = config_error("head-dim-add-overflow.json");
    assert!(e.contains("qk_nope_head_dim") && e.contains("overflow"), "{e}");
    // vocab 2⁴⁰ × hidden 2⁴⁰: the parameter count overflowed.
    let e = config_error("vocab-dim-count-overflow.json");
    assert!((e.contains("vocab_size") || e.contains("hidden_size")) && e.contains("overflow"), "{e}");
    // n_shared_experts × moe_intermediate_size overflowed in the shapes.
    let e = config_error("shared-width-mul-overflow.json");
    assert!((e.contains("moe_intermediate_size") || e.contains("n_shared_experts")) && e.contains("overflow"), "{e}");
    // 2 · n_heads · v_head_dim (the cache sizes) overflowed.
    let e = config_error("heads-cache-mul-overflow.json");
    assert!(e.contains("num_attention_heads") && e.contains("overflow"), "{e}");
}

/// Large but valid: counted in closed form (no shapes built), refused by the memory check.
#[test]
fn large_valid_configs_are_calculations_and_refused_by_memory() {
    let path = regression("config_json", "experts-65536-hang.json");
    let cfg = ModelConfig::from_file(&path).unwrap();
    let sizes = cfg.sizes(Layout::default()).unwrap();
    assert!(sizes.total > 100_000_000_000_000, "{}", sizes.total);
    let need = training_need(&cfg, Layout::default(), 1, 16).unwrap();
    let e = check_memory(&need, Some(1 << 30), "--no-memory-check").unwrap_err().to_string();
    assert!(e.contains("n_routed_experts") && e.contains("1.0 GiB"), "{e}");
    // Every width within reason, 2⁴⁸ embedding values: also a calculation.
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["n_routed_experts"] = 256.into();
    json["vocab_size"] = (1u64 << 24).into();
    json["hidden_size"] = (1u64 << 24).into();
    let cfg = ModelConfig::from_json(&json).unwrap();
    let need = training_need(&cfg, Layout::default(), 1, 16).unwrap();
    let e = check_memory(&need, Some(1 << 30), "--no-memory-check").unwrap_err().to_string();
    assert!(e.contains("hidden_size"), "{e}");
}

#[test]
fn an_empty_token_tensor_of_impossible_shape_is_an_error() {
    // [0, 2⁶³] I64: no bytes, so safetensors accepts it; ndarray cannot hold the shape.
    let path = regression("token_file", "empty-shape-past-isize");
    let e = read_tokens(&path).unwrap_err().to_string();
    assert!(e.contains("empty-shape-past-isize") && e.contains("tensor `tokens`"), "{e}");
    assert!(e.contains("cannot be held"), "{e}");
}
