//! The fuzzers' findings (fuzz/README.md), each an input that once panicked or aborted,
//! committed in `fuzz/regressions/<target>/`: each must now give an error naming the
//! field or tensor at fault. (`replay.rs` runs them through the targets as well.)

use std::path::PathBuf;
use v3lab_reference::io::read_tokens;
use v3lab_reference::ModelConfig;

fn regression(target: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target).join(name)
}

fn config_error(name: &str) -> String {
    let path = regression("config_json", name);
    ModelConfig::from_file(&path).expect_err(name).to_string()
}

#[test]
fn oversized_configs_are_errors_naming_the_field() {
    // n_routed_experts = 2³¹: the shapes of the experts were an allocation abort.
    let e = config_error("experts-2-31-alloc-abort.json");
    assert!(e.contains("config.json") || e.contains("experts-2-31"), "{e}");
    assert!(e.contains("n_routed_experts") && e.contains("2147483648"), "{e}");
    // 65,536 experts in each of 62 layers: seconds and gigabytes of shapes (a hang).
    let e = config_error("experts-65536-hang.json");
    assert!(e.contains("n_routed_experts") && e.contains("65536"), "{e}");
    // qk_nope_head_dim = 2⁶⁴−1: `qk_nope_head_dim + qk_rope_head_dim` overflowed.
    let e = config_error("head-dim-add-overflow.json");
    assert!(e.contains("qk_nope_head_dim") && e.contains("exceeds"), "{e}");
    // vocab 2⁴⁰ × hidden 2⁴⁰: the parameter count overflowed.
    let e = config_error("vocab-dim-count-overflow.json");
    assert!(e.contains("vocab_size") && e.contains("exceeds"), "{e}");
    // n_shared_experts × moe_intermediate_size overflowed in the shapes.
    let e = config_error("shared-width-mul-overflow.json");
    assert!(e.contains("moe_intermediate_size") && e.contains("exceeds"), "{e}");
    // 2 · n_heads · v_head_dim (the cache sizes) overflowed.
    let e = config_error("heads-cache-mul-overflow.json");
    assert!(e.contains("num_attention_heads") && e.contains("exceeds"), "{e}");
}

#[test]
fn a_parameter_count_past_the_bound_is_an_error() {
    // Every width within bounds, the product past 2⁴⁸ parameters.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(regression("config_json", "experts-65536-hang.json")).unwrap()).unwrap();
    json["n_routed_experts"] = 256.into();
    json["vocab_size"] = (1u64 << 24).into();
    json["hidden_size"] = (1u64 << 24).into();
    let e = ModelConfig::from_json(&json).unwrap_err().to_string();
    assert!(e.contains("parameters") && e.contains("hidden_size"), "{e}");
}

#[test]
fn an_empty_token_tensor_of_impossible_shape_is_an_error() {
    // [0, 2⁶³] I64: no bytes, so safetensors accepts it; ndarray cannot hold the shape.
    let path = regression("token_file", "empty-shape-past-isize");
    let e = read_tokens(&path).unwrap_err().to_string();
    assert!(e.contains("empty-shape-past-isize") && e.contains("tensor `tokens`"), "{e}");
    assert!(e.contains("cannot be held"), "{e}");
}
