//! What several integration tests of the reference share.

use v3lab_reference::ModelConfig;

/// The tiny V3-style model the training tests train: two layers (one dense, one MoE of 4
/// routed experts, top-2, and a shared one), low-rank queries, one MTP module.
pub fn tiny_train_config(vocab_size: usize) -> ModelConfig {
    ModelConfig::from_json(&serde_json::json!({
        "vocab_size": vocab_size, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 2, "n_dense_layers": 1,
        "n_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1, "n_activated_experts": 2,
        "score_func": "sigmoid", "route_scale": 2.5, "q_lora_rank": 8, "kv_lora_rank": 8,
        "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4, "max_seq_len": 16, "n_mtp_layers": 1
    }))
    .unwrap()
}
