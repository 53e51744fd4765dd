//! Variants that must agree (DESIGN habit 12): naive vs absorbed attention, full forward vs
//! incremental decoding with either cache, on random small models and tokens.

use ndarray::{s, Array2, ArrayD, Axis};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::train::init::init_params;
use v3lab_reference::{AttentionImpl, CpuBackend, Decoder, ModelConfig, Transformer};

/// Two f32 evaluations of one quantity in different association orders.
const REORDERED_F32: f64 = 1e-5;

fn rel(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    let diff: f64 = a.iter().zip(b.iter()).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

prop_compose! {
    fn small_config()(heads in 1usize..4, nope in 1usize..5, rope_half in 1usize..4, v in 1usize..5, c in 2usize..9,
                      q_lora in prop::option::of(2usize..9), groups in 1usize..3, per_group in 2usize..4,
                      sigmoid in any::<bool>(), yarn in any::<bool>()) -> ModelConfig {
        let experts = groups * per_group;
        let json = serde_json::json!({
            "vocab_size": 37, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 2, "n_dense_layers": 1,
            "n_heads": heads, "n_routed_experts": experts, "n_shared_experts": 1, "n_activated_experts": 2,
            "n_expert_groups": groups, "n_limited_groups": 1 + (groups > 1) as usize,
            "score_func": if sigmoid { "sigmoid" } else { "softmax" }, "route_scale": 1.5,
            "q_lora_rank": q_lora.unwrap_or(0), "kv_lora_rank": c, "qk_nope_head_dim": 2 * nope,
            "qk_rope_head_dim": 2 * rope_half, "v_head_dim": 2 * v,
            "max_seq_len": 16, "original_seq_len": if yarn { 4 } else { 16 }, "rope_factor": 4.0, "mscale": 0.8,
        });
        ModelConfig::from_json(&json).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn naive_absorbed_and_decoding_agree(cfg in small_config(), seed in 0u64..1000, batch in 1usize..3, seq in 2usize..9) {
        let b = CpuBackend;
        // A larger init than the paper's so that attention is far from uniform.
        let params = init_params(&cfg, 0.3, seed).unwrap();
        let model = Transformer::new(&b, cfg.clone(), &params).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tokens = Array2::from_shape_simple_fn((batch, seq), || rng.random_range(0..cfg.vocab_size as i64));
        let tok = b.upload_indices(tokens.view().into_dyn()).unwrap();

        let naive = model.forward(&b, &tok, AttentionImpl::Naive).unwrap();
        let absorbed = model.forward(&b, &tok, AttentionImpl::Absorbed).unwrap();
        prop_assert!(rel(&absorbed, &naive) <= REORDERED_F32, "absorbed vs naive: {}", rel(&absorbed, &naive));

        for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
            let prefill = seq / 2;
            let mut dec = Decoder::new(&b, &model, imp, batch, seq).unwrap();
            let mut pieces = vec![dec.step(&b, &b.upload_indices(tokens.slice(s![.., ..prefill]).into_dyn()).unwrap()).unwrap()];
            for pos in prefill..seq {
                pieces.push(dec.step(&b, &b.upload_indices(tokens.slice(s![.., pos..pos + 1]).into_dyn()).unwrap()).unwrap());
            }
            let views: Vec<_> = pieces.iter().map(|p| p.view()).collect();
            let decoded = ndarray::concatenate(Axis(1), &views).unwrap();
            prop_assert!(rel(&decoded, &naive) <= REORDERED_F32, "{imp:?} decoding vs forward: {}", rel(&decoded, &naive));
        }
    }
}

#[test]
fn decoding_past_the_cache_is_an_error() {
    let json = serde_json::json!({
        "vocab_size": 8, "dim": 8, "inter_dim": 8, "moe_inter_dim": 4, "n_layers": 1, "n_dense_layers": 1, "n_heads": 1,
        "n_routed_experts": 2, "n_activated_experts": 1, "kv_lora_rank": 4, "qk_nope_head_dim": 2,
        "qk_rope_head_dim": 2, "v_head_dim": 2, "max_seq_len": 4, "original_seq_len": 4,
    });
    let cfg = ModelConfig::from_json(&json).unwrap();
    let b = CpuBackend;
    let model = Transformer::new(&b, cfg.clone(), &init_params(&cfg, 0.1, 1).unwrap()).unwrap();
    let mut dec = Decoder::new(&b, &model, AttentionImpl::Absorbed, 1, 2).unwrap();
    let two = b.upload_indices(ndarray::arr2(&[[1i64, 2]]).into_dyn().view()).unwrap();
    dec.step(&b, &two).unwrap();
    let err = dec.step(&b, &b.upload_indices(ndarray::arr2(&[[3i64]]).into_dyn().view()).unwrap()).unwrap_err();
    assert!(err.to_string().contains("past the cache"), "{err}");
    assert!(Decoder::new(&b, &model, AttentionImpl::Naive, 1, 5).is_err(), "a cache longer than max_seq_len");
}

/// Decoding with a cache of the other kind is an error that names both, not a panic.
#[test]
fn attention_with_the_other_kind_of_cache_is_an_error() {
    use v3lab_reference::mla::{LayerCache, Mla, Step};
    let cfg = ModelConfig::from_json(&serde_json::json!({
        "vocab_size": 37, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 1, "n_dense_layers": 1,
        "n_heads": 2, "n_routed_experts": 4, "n_activated_experts": 2, "kv_lora_rank": 4,
        "qk_nope_head_dim": 4, "qk_rope_head_dim": 2, "v_head_dim": 4, "max_seq_len": 8,
    }))
    .unwrap();
    let b = CpuBackend;
    let model = Transformer::new(&b, cfg.clone(), &init_params(&cfg, 0.3, 1).unwrap()).unwrap();
    let mla = Mla { b: &b, cfg: &cfg, p: &model.params.layers[0].attn, rope: model.rope() };
    let x = b.zeros(&[1, 2, cfg.dim]).unwrap();
    for (cache_kind, imp, want) in [
        (AttentionImpl::Naive, AttentionImpl::Absorbed, "Absorbed attention with a naive cache"),
        (AttentionImpl::Absorbed, AttentionImpl::Naive, "Naive attention with a latent cache"),
    ] {
        let mut cache = LayerCache::new(&b, &cfg, cache_kind, 1, 8).unwrap();
        let err = mla.forward(&x, Step::infer(0, Some(&mut cache), imp)).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}
