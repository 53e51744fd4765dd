//! Conformance checks of whole components: MoE, MLA (naive and absorbed, with and without
//! a cache), the whole model on the goldens of the public PyTorch code, and decoding.

use crate::suite::{expect_close, expect_indices, rand_array, rng_for, up, up_idx};
use crate::tolerance::*;
use crate::{assert_close, goldens_dir, read_f64};
use ndarray::{s, ArrayD, Axis, IxDyn};
use rand::Rng;
use v3lab_reference::mla::{rope::RopeTable, LayerCache, Mla, Rope, Step};
use v3lab_reference::model::params::{FfnParams, Params};
use v3lab_reference::moe::moe_forward;
use v3lab_reference::train::init::init_params;
use v3lab_reference::{checkpoint, AttentionImpl, Backend, CpuBackend, Decoder, ModelConfig, Transformer};

const CPU: CpuBackend = CpuBackend;

/// A random V3-shaped model, small enough for the CPU and with every feature on: query
/// LoRA, YaRN, sigmoid gate with bias and 4 groups of which 2 are kept, a shared expert,
/// widths that are not multiples of 32, 64 or 128.
pub fn random_config(softmax: bool) -> ModelConfig {
    let json = serde_json::json!({
        "vocab_size": 301, "dim": 96, "inter_dim": 200, "moe_inter_dim": 40, "n_layers": 3, "n_dense_layers": 1,
        "n_heads": 5, "n_routed_experts": 16, "n_shared_experts": 1, "n_activated_experts": 4,
        "n_expert_groups": if softmax { 1 } else { 4 }, "n_limited_groups": if softmax { 1 } else { 2 },
        "score_func": if softmax { "softmax" } else { "sigmoid" }, "route_scale": 2.5,
        "q_lora_rank": if softmax { 0 } else { 48 }, "kv_lora_rank": 72, "qk_nope_head_dim": 24,
        "qk_rope_head_dim": 16, "v_head_dim": 20,
        "max_seq_len": 64, "original_seq_len": if softmax { 64 } else { 16 }, "rope_factor": 4.0, "mscale": 1.0,
    });
    ModelConfig::from_json(&json).expect("a valid config")
}

/// Weights with a std large enough that attention and routing are far from uniform; the
/// selection biases random too (zeros would hide a bias bug).
pub(crate) fn random_params(cfg: &ModelConfig, seed: u64) -> Params<ArrayD<f32>> {
    let mut params = init_params(cfg, 0.08, seed).expect("a valid config");
    let mut rng = rng_for("bias");
    for layer in &mut params.layers {
        if let FfnParams::Moe(moe) = &mut layer.ffn {
            if let Some(bias) = &mut moe.gate_bias {
                *bias = rand_array(&mut rng, bias.shape()).mapv(|v| 0.05 * v);
            }
        }
    }
    params
}

/// The MoE block on its own: output and routing against the CPU.
pub fn check_moe<B: Backend>(b: &B) {
    for softmax in [false, true] {
        let cfg = random_config(softmax);
        let host = random_params(&cfg, 7);
        let dev = host.try_map(|_, _, t| b.upload(t.view())).unwrap();
        let (FfnParams::Moe(p_cpu), FfnParams::Moe(p_dev)) = (&host.layers[1].ffn, &dev.layers[1].ffn) else {
            panic!("layer 1 is a MoE layer");
        };
        for shape in [[1, 1, cfg.dim], [2, 37, cfg.dim]] {
            let x = rand_array(&mut rng_for("moe"), &shape);
            let (want, want_r, _) = moe_forward(&CPU, &cfg, p_cpu, &x, false).unwrap();
            let (got, got_r, _) = moe_forward(b, &cfg, p_dev, &up(b, &x), false).unwrap();
            let tag = format!("moe {shape:?} softmax {softmax}");
            expect_indices(b, &format!("{tag} indices"), &got_r.indices, &want_r.indices);
            expect_close(b, &tag, &got, &want, F32_MODEL);
        }
    }
}

/// MLA, naive and absorbed, without a cache and with one (prefill, then single steps).
pub fn check_mla<B: Backend>(b: &B) {
    let cfg = random_config(false);
    let host = random_params(&cfg, 11);
    let dev = host.try_map(|_, _, t| b.upload(t.view())).unwrap();
    let rope = RopeTable::new(&cfg);
    let (cos, sin) = (rope.cos.into_dyn(), rope.sin.into_dyn());
    let (cos_b, sin_b) = (up(b, &cos), up(b, &sin));
    let mla_cpu = Mla { b: &CPU, cfg: &cfg, p: &host.layers[0].attn, rope: Rope { cos: &cos, sin: &sin } };
    let mla_dev = Mla { b, cfg: &cfg, p: &dev.layers[0].attn, rope: Rope { cos: &cos_b, sin: &sin_b } };
    let x = rand_array(&mut rng_for("mla"), &[2, 11, cfg.dim]);
    for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
        let want = mla_cpu.forward(&x, Step::infer(0, None, imp)).unwrap().0;
        let got = mla_dev.forward(&up(b, &x), Step::infer(0, None, imp)).unwrap().0;
        expect_close(b, &format!("mla {imp:?}"), &got, &want, F32_MODEL);

        let mut cache_cpu = LayerCache::new(&CPU, &cfg, imp, 2, 16).unwrap();
        let mut cache_dev = LayerCache::new(b, &cfg, imp, 2, 16).unwrap();
        for (start, len) in [(0, 7), (7, 1), (8, 1), (9, 2)] {
            let xs = x.slice(s![.., start..start + len, ..]).to_owned().into_dyn();
            let want = mla_cpu.forward(&xs, Step::infer(start, Some(&mut cache_cpu), imp)).unwrap().0;
            let got = mla_dev.forward(&up(b, &xs), Step::infer(start, Some(&mut cache_dev), imp));
            expect_close(b, &format!("mla {imp:?} cached at {start}"), &got.unwrap().0, &want, F32_MODEL);
        }
    }
}

/// A whole random model (both attention variants) and incremental decoding with either
/// cache, against the CPU.
pub fn check_random_model<B: Backend>(b: &B) {
    let cfg = random_config(false);
    let host = random_params(&cfg, 3);
    let (m_cpu, m_dev) =
        (Transformer::new(&CPU, cfg.clone(), &host).unwrap(), Transformer::new(b, cfg.clone(), &host).unwrap());
    let mut rng = rng_for("random_model");
    let tokens = ArrayD::from_shape_simple_fn(IxDyn(&[2, 19]), || rng.random_range(0..cfg.vocab_size as i64));
    let (tok_cpu, tok_dev) = (up_idx(&CPU, &tokens), up_idx(b, &tokens));
    for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
        let want = m_cpu.forward_traced(&CPU, &tok_cpu, 0, None, imp).unwrap();
        let got = m_dev.forward_traced(b, &tok_dev, 0, None, imp).unwrap();
        for (i, (g, w)) in got.routing.iter().zip(&want.routing).enumerate() {
            if let (Some(g), Some(w)) = (g, w) {
                expect_indices(b, &format!("model {imp:?} layer {i} routing"), &g.indices, &w.indices);
            }
        }
        expect_close(b, &format!("model {imp:?} logits"), &got.logits, &want.logits, F32_MODEL);

        let mut dec_cpu = Decoder::new(&CPU, &m_cpu, imp, 2, 19).unwrap();
        let mut dec_dev = Decoder::new(b, &m_dev, imp, 2, 19).unwrap();
        for (start, len) in [(0, 12), (12, 1), (13, 1), (14, 5)] {
            let piece = tokens.slice(s![.., start..start + len]).to_owned().into_dyn();
            let want = dec_cpu.step(&CPU, &up_idx(&CPU, &piece)).unwrap();
            let got = dec_dev.step(b, &up_idx(b, &piece)).unwrap();
            expect_close(b, &format!("decode {imp:?} at {start}"), &got, &want, F32_MODEL);
        }
    }
}

fn read_i64(file: &safetensors::SafeTensors<'_>, name: &str) -> ArrayD<i64> {
    let view = file.tensor(name).unwrap_or_else(|_| panic!("golden `{name}` missing"));
    let data = view.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    ArrayD::from_shape_vec(view.shape(), data).unwrap()
}

/// The whole forward (every intermediate of the trace, routing indices exact) and both
/// decoding caches on the goldens of the public PyTorch code, held to the same bounds as
/// the CPU reference.
pub fn check_goldens<B: Backend>(b: &B) {
    for name in ["official-v3-tiny", "official-v2lite-tiny"] {
        let dir = goldens_dir().join(name);
        let ckpt = checkpoint::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let model = Transformer::new(b, ckpt.config.clone(), &ckpt.params).unwrap();
        let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let expected = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tokens = read_i64(&expected, "tokens");
        let tok = up_idx(b, &tokens);
        let down = |t: &B::Tensor| b.download(t).unwrap();
        for imp in [AttentionImpl::Naive, AttentionImpl::Absorbed] {
            let trace = model.forward_traced(b, &tok, 0, None, imp).unwrap();
            let tag = |what: &str| format!("{} {name} {imp:?} {what}", b.name());
            assert_close(&tag("embed"), &down(&trace.embed), &read_f64(&expected, "embed"), FORWARD_VS_PYTORCH);
            for (i, out) in trace.layer_out.iter().enumerate() {
                let want = read_f64(&expected, &format!("layer{i}.out"));
                assert_close(&tag(&format!("layer{i}.out")), &down(out), &want, FORWARD_VS_PYTORCH);
                if let Some(r) = &trace.routing[i] {
                    let want = read_i64(&expected, &format!("layer{i}.gate.indices"));
                    expect_indices(b, &tag(&format!("layer{i} gate indices")), &r.indices, &want);
                    let want = read_f64(&expected, &format!("layer{i}.gate.weights"));
                    assert_close(&tag(&format!("layer{i}.gate.weights")), &down(&r.weights), &want, FORWARD_VS_PYTORCH);
                }
            }
            let want = read_f64(&expected, "final_hidden");
            assert_close(&tag("final_hidden"), &down(&trace.final_hidden), &want, FORWARD_VS_PYTORCH);
            let err =
                assert_close(&tag("logits"), &down(&trace.logits), &read_f64(&expected, "logits"), LOGITS_VS_PYTORCH);
            eprintln!("{} logits rel err {err:.2e}", tag(""));
        }
        for (imp, golden) in [(AttentionImpl::Naive, "decode_naive"), (AttentionImpl::Absorbed, "decode_absorb")] {
            let mut dec = Decoder::new(b, &model, imp, tokens.shape()[0], tokens.shape()[1]).unwrap();
            let prefill = tokens.slice(s![.., ..12]).to_owned().into_dyn();
            let logits = down(&dec.step(b, &up_idx(b, &prefill)).unwrap());
            let mut steps = vec![logits.index_axis(Axis(1), 11).to_owned()];
            for pos in 12..tokens.shape()[1] {
                let one = tokens.slice(s![.., pos..pos + 1]).to_owned().into_dyn();
                steps.push(down(&dec.step(b, &up_idx(b, &one)).unwrap()).index_axis(Axis(1), 0).to_owned());
            }
            let views: Vec<_> = steps.iter().map(|a| a.view()).collect();
            let got = ndarray::stack(Axis(1), &views).unwrap();
            let want = read_f64(&expected, golden);
            let err = assert_close(&format!("{} {name} {golden}", b.name()), &got, &want, LOGITS_VS_PYTORCH);
            eprintln!("{} {name} {golden} rel err {err:.2e}", b.name());
        }
    }
}
