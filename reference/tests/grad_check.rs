//! Every hand-written backward against central finite differences, in f64: the very code
//! of the reference, run by `CpuBackendF64`, on random shapes (proptest). Each check
//! differentiates a scalar `L = Σ r ⊙ y` (random `r`) or the training objective itself.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::backend::{CpuBackendF64, RouteSpec, ScoreFunc};
use v3lab_reference::fp8::LinearPrecision::F32;
use v3lab_reference::mla::{Mla, Step};
use v3lab_reference::model::block_forward;
use v3lab_reference::model::params::{Layout, MlaParams, MlpParams, QueryParams, TryMap};
use v3lab_reference::model::train::block_backward;
use v3lab_reference::moe::mlp_forward;
use v3lab_reference::moe::train::mlp_backward;
use v3lab_reference::train::objective::{self, AuxLoss, Objective};
use v3lab_reference::{ModelConfig, Params, Transformer};

type T = ArrayD<f64>;

/// Central-difference step: truncation error ~h² ≈ 1e-12 relative, rounding ~1e-16·|L|/h ≈ 1e-10.
const FD_STEP: f64 = 1e-6;
/// Absolute slack of a central difference in f64 with `FD_STEP` (rounding of L ≲ 10).
const FD_ABS: f64 = 1e-7;
/// Relative slack: the truncation error, with room (a wrong backward is off by O(1)).
const FD_REL: f64 = 1e-5;
/// Entries perturbed per tensor (chosen at random): keeps every case fast.
const SAMPLES: usize = 8;

fn random(rng: &mut StdRng, shape: &[usize], scale: f64) -> T {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0) * scale)
}

fn dot(a: &T, r: &T) -> f64 {
    assert_eq!(a.shape(), r.shape());
    a.iter().zip(r).map(|(a, r)| a * r).sum()
}

/// Checks `grads[i]` against central differences of `loss` in every input `i` at
/// `SAMPLES` random entries. `loss` returns None when the perturbation changed a discrete
/// decision (an expert choice): that entry is skipped, the function is not smooth there.
fn fd_check(
    what: &str,
    inputs: &[T],
    grads: &[T],
    mut loss: impl FnMut(&[T]) -> Option<f64>,
    rng: &mut StdRng,
) -> usize {
    assert_eq!(inputs.len(), grads.len(), "{what}: one gradient per input");
    let mut checked = 0;
    for (i, (x, g)) in inputs.iter().zip(grads).enumerate() {
        assert_eq!(x.shape(), g.shape(), "{what}: gradient {i} shape");
        for _ in 0..SAMPLES.min(x.len()) {
            let j = rng.random_range(0..x.len());
            let mut at = |delta: f64| {
                let mut moved = inputs.to_vec();
                moved[i].as_slice_mut().expect("standard layout")[j] += delta;
                loss(&moved)
            };
            let (Some(plus), Some(minus)) = (at(FD_STEP), at(-FD_STEP)) else { continue };
            let fd = (plus - minus) / (2.0 * FD_STEP);
            let an = g.as_slice().expect("standard layout")[j];
            assert!(
                (fd - an).abs() <= FD_ABS + FD_REL * an.abs(),
                "{what}: input {i} entry {j}: fd {fd:e} vs backward {an:e}"
            );
            checked += 1;
        }
    }
    checked
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn linear(seed in 0u64..u64::MAX, lead in 1usize..4, rows in 1usize..5, k in 1usize..7, m in 1usize..7) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let (x, w) = (random(&mut rng, &[lead, rows, k], 1.0), random(&mut rng, &[m, k], 1.0));
        let r = random(&mut rng, &[lead, rows, m], 1.0);
        let (dx, dw) = b.linear_backward(&x, &w, &r).unwrap();
        fd_check("linear", &[x, w], &[dx, dw], |v| Some(dot(&b.linear(&v[0], &v[1]).unwrap(), &r)), &mut rng);
    }

    #[test]
    fn rms_norm(seed in 0u64..u64::MAX, rows in 1usize..6, d in 1usize..9) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let (x, w, r) = (random(&mut rng, &[rows, d], 2.0), random(&mut rng, &[d], 1.5), random(&mut rng, &[rows, d], 1.0));
        let (_, rstd) = b.rms_norm_forward(&x, &w, 1e-6).unwrap();
        let (dx, dw) = b.rms_norm_backward(&x, &w, &rstd, &r).unwrap();
        fd_check("rms_norm", &[x, w], &[dx, dw], |v| Some(dot(&b.rms_norm_forward(&v[0], &v[1], 1e-6).unwrap().0, &r)), &mut rng);
    }

    #[test]
    fn swiglu(seed in 0u64..u64::MAX, n in 1usize..20) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let (g, u, r) = (random(&mut rng, &[n], 4.0), random(&mut rng, &[n], 2.0), random(&mut rng, &[n], 1.0));
        let (dg, du) = b.swiglu_backward(&g, &u, &r).unwrap();
        fd_check("swiglu", &[g, u], &[dg, du], |v| Some(dot(&b.swiglu_forward(&v[0], &v[1]).unwrap(), &r)), &mut rng);
    }

    #[test]
    fn rope(seed in 0u64..u64::MAX, bsz in 1usize..3, seq in 1usize..5, heads in 1usize..3, half in 1usize..4, start in 0usize..3) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let angle = random(&mut rng, &[seq + start, half], 3.0);
        let amplitude = 1.0 + rng.random_range(0.0..0.5); // YaRN's mscale ratio
        let (cos, sin) = (angle.mapv(|a| a.cos() * amplitude), angle.mapv(|a| a.sin() * amplitude));
        let x = random(&mut rng, &[bsz, seq, heads, 2 * half], 1.0);
        let r = random(&mut rng, &[bsz, seq, heads, 2 * half], 1.0);
        let dx = b.rope_backward(&r, &cos, &sin, start).unwrap();
        fd_check("rope", &[x], &[dx], |v| Some(dot(&b.rope_forward(&v[0], &cos, &sin, start).unwrap(), &r)), &mut rng);
    }

    #[test]
    fn embedding(seed in 0u64..u64::MAX, vocab in 1usize..8, d in 1usize..5, n in 1usize..10) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let table = random(&mut rng, &[vocab, d], 1.0);
        let tokens = ArrayD::from_shape_fn(IxDyn(&[n]), |_| rng.random_range(0..vocab as i64));
        let r = random(&mut rng, &[n, d], 1.0);
        let dt = b.embedding_backward(&tokens, &r, vocab).unwrap();
        fd_check("embedding", &[table], &[dt], |v| Some(dot(&b.embedding_forward(&v[0], &tokens).unwrap(), &r)), &mut rng);
    }

    #[test]
    fn attention(seed in 0u64..u64::MAX, bsz in 1usize..3, seq in 1usize..5, past in 0usize..3, heads in 1usize..3,
                 dk in 1usize..5, dv in 1usize..5) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let keys = seq + past;
        let q = random(&mut rng, &[bsz, seq, heads, dk], 1.0);
        let k = random(&mut rng, &[bsz, keys, heads, dk], 1.0);
        let v = random(&mut rng, &[bsz, keys, heads, dv], 1.0);
        let r = random(&mut rng, &[bsz, seq, heads, dv], 1.0);
        let scale = 0.7;
        let (out, lse) = b.attention_forward(&q, &k, &v, scale, past).unwrap();
        let (dq, dk_, dv_) = b.attention_backward(&q, &k, &v, &out, &lse, &r, scale, past).unwrap();
        let f = |x: &[T]| Some(dot(&b.attention_forward(&x[0], &x[1], &x[2], scale, past).unwrap().0, &r));
        fd_check("attention", &[q, k, v], &[dq, dk_, dv_], f, &mut rng);
    }

    #[test]
    fn cross_entropy(seed in 0u64..u64::MAX, n in 1usize..6, vocab in 2usize..9) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let logits = random(&mut rng, &[n, vocab], 3.0);
        let targets = ArrayD::from_shape_fn(IxDyn(&[n]), |_| rng.random_range(0..vocab as i64));
        let (_, lse) = b.cross_entropy_forward(&logits, &targets).unwrap();
        let dl = b.cross_entropy_backward(&logits, &lse, &targets, 0.75).unwrap();
        fd_check("cross_entropy", &[logits], &[dl], |v| Some(0.75 * b.cross_entropy_forward(&v[0], &targets).unwrap().0), &mut rng);
    }

    #[test]
    fn route(seed in 0u64..u64::MAX, n in 1usize..6, groups in 1usize..3, per_group in 2usize..4, sigmoid in any::<bool>()) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let e = groups * per_group;
        let spec = RouteSpec {
            score_func: if sigmoid { ScoreFunc::Sigmoid } else { ScoreFunc::Softmax },
            top_k: 2, n_groups: groups, topk_groups: 1.max(groups - 1), normalize: sigmoid, route_scale: 2.5,
        };
        let logits = random(&mut rng, &[n, e], 2.0);
        let bias = random(&mut rng, &[e], 0.2);
        let (rw, rs) = (random(&mut rng, &[n, 2], 1.0), random(&mut rng, &[n, e], 1.0));
        let routing = b.route(&logits, Some(&bias), &spec).unwrap();
        let dl = b.route_backward(&routing, &rw, Some(&rs), &spec).unwrap();
        let f = |v: &[T]| {
            let r = b.route(&v[0], Some(&bias), &spec).unwrap();
            (r.indices == routing.indices).then(|| dot(&r.weights, &rw) + dot(&r.scores, &rs))
        };
        fd_check("route", &[logits], &[dl], f, &mut rng);
    }
}

/// A tiny model: V3-style (sigmoid, groups, bias, low-rank queries, YaRN) or V2-style
/// (softmax, no groups, full queries), with `mtp` MTP modules.
fn tiny_config(v3: bool, mtp: usize) -> ModelConfig {
    ModelConfig::from_json(&serde_json::json!({
        "vocab_size": 24, "dim": 16, "inter_dim": 24, "moe_inter_dim": 8, "n_layers": 2, "n_dense_layers": 1,
        "n_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1, "n_activated_experts": 2,
        "n_expert_groups": if v3 { 2 } else { 1 }, "n_limited_groups": 1,
        "score_func": if v3 { "sigmoid" } else { "softmax" }, "route_scale": if v3 { 2.5 } else { 1.0 },
        "q_lora_rank": if v3 { 8 } else { 0 }, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4,
        "v_head_dim": 4, "max_seq_len": 16, "original_seq_len": if v3 { 8 } else { 16 }, "rope_factor": 2.0,
        "n_mtp_layers": mtp,
    }))
    .unwrap()
}

fn tiny_model(cfg: &ModelConfig, rng: &mut StdRng) -> Transformer<CpuBackendF64> {
    let host = Params::shapes(cfg, Layout::default()).try_map(|name, _, shape| -> Result<_, ()> {
        let scale = if name.contains("norm") || name.contains("layernorm") { 0.0 } else { 0.4 };
        let mut t = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0f32..1.0) * scale);
        if scale == 0.0 {
            t.mapv_inplace(|_| 1.0 + rng.random_range(-0.2f32..0.2));
        }
        if name.ends_with("e_score_correction_bias") {
            t.mapv_inplace(|v| v * 0.25);
        }
        Ok(t)
    });
    Transformer::new(&CpuBackendF64, cfg.clone(), &host.unwrap()).unwrap()
}

fn flat<P: TryMap<T>>(p: &P) -> Vec<T> {
    let mut out = Vec::new();
    let _ = p.try_map("", &mut |_, _, t: &T| -> Result<(), ()> {
        out.push(t.clone());
        Ok(())
    });
    out
}

fn rebuild<P: TryMap<T, Out<T> = P>>(template: &P, values: &[T]) -> P {
    let mut it = values.iter();
    template
        .try_map("", &mut |_, _, _| -> Result<T, ()> { Ok(it.next().expect("one value per leaf").clone()) })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn mlp_module(seed in 0u64..u64::MAX, rows in 1usize..5) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let p = MlpParams { w1: random(&mut rng, &[6, 4], 0.7), w2: random(&mut rng, &[4, 6], 0.7), w3: random(&mut rng, &[6, 4], 0.7) };
        let (x, r) = (random(&mut rng, &[rows, 4], 1.0), random(&mut rng, &[rows, 4], 1.0));
        let saved = mlp_forward(&b, &F32, &p, &x, true).unwrap().1.unwrap();
        let (dx, g) = mlp_backward(&b, &F32, &p, &r, &saved).unwrap();
        let (inputs, grads) = ([vec![x], vec![p.w1.clone(), p.w2.clone(), p.w3.clone()]].concat(), vec![dx, g.w1, g.w2, g.w3]);
        let f = |v: &[T]| Some(dot(&mlp_forward(&b, &F32, &MlpParams { w1: v[1].clone(), w2: v[2].clone(), w3: v[3].clone() }, &v[0], false).unwrap().0, &r));
        fd_check("mlp", &inputs, &grads, f, &mut rng);
    }

    #[test]
    fn mla_module(seed in 0u64..u64::MAX, v3 in any::<bool>(), bsz in 1usize..3, seq in 1usize..6) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let cfg = tiny_config(v3, 0);
        let model = tiny_model(&cfg, &mut rng);
        let rope = model.rope();
        let p = &model.params.layers[0].attn;
        let leaves = |p: &MlaParams<T>| -> Vec<T> {
            let mut v = match &p.query {
                QueryParams::LowRank { wq_a, q_norm, wq_b } => vec![wq_a.clone(), q_norm.clone(), wq_b.clone()],
                QueryParams::Full { wq } => vec![wq.clone()],
            };
            v.extend([p.wkv_a.clone(), p.kv_norm.clone(), p.wkv_b.clone(), p.wo.clone()]);
            v
        };
        let build = |v: &[T]| -> MlaParams<T> {
            let (query, rest) = match &p.query {
                QueryParams::LowRank { .. } => (QueryParams::LowRank { wq_a: v[0].clone(), q_norm: v[1].clone(), wq_b: v[2].clone() }, &v[3..]),
                QueryParams::Full { .. } => (QueryParams::Full { wq: v[0].clone() }, &v[1..]),
            };
            MlaParams { query, wkv_a: rest[0].clone(), kv_norm: rest[1].clone(), wkv_b: rest[2].clone(), wo: rest[3].clone() }
        };
        let (x, r) = (random(&mut rng, &[bsz, seq, cfg.dim], 1.0), random(&mut rng, &[bsz, seq, cfg.dim], 1.0));
        let mla = Mla { b: &b, cfg: &cfg, p, rope };
        let saved = mla.forward(&x, Step::train()).unwrap().1.unwrap();
        let (dx, g) = mla.backward(&r, &saved).unwrap();
        let inputs = [vec![x], leaves(p)].concat();
        let grads = [vec![dx], leaves(&g)].concat();
        let f = |v: &[T]| Some(dot(&Mla { b: &b, cfg: &cfg, p: &build(&v[1..]), rope }.forward(&v[0], Step::train()).unwrap().0, &r));
        fd_check("mla", &inputs, &grads, f, &mut rng);
    }

    /// A MoE decoder block (MLA, both norms, gate and routing, routed and shared experts)
    /// with an extra gradient on the gate scores, as a balance loss hands in.
    #[test]
    fn moe_block(seed in 0u64..u64::MAX, v3 in any::<bool>(), bsz in 1usize..3, seq in 1usize..6) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let cfg = tiny_config(v3, 0);
        let model = tiny_model(&cfg, &mut rng);
        let (rope, p) = (model.rope(), &model.params.layers[1]);
        let (x, r) = (random(&mut rng, &[bsz, seq, cfg.dim], 1.0), random(&mut rng, &[bsz, seq, cfg.dim], 1.0));
        let rs = random(&mut rng, &[bsz * seq, cfg.n_routed_experts], 1.0);
        let saved = block_forward(&b, &cfg, &rope, p, &x, Step::train()).unwrap().2.unwrap();
        let (dx, g) = block_backward(&b, &cfg, &rope, p, &r, &saved, Some(&rs)).unwrap();
        let routing = saved.routing().unwrap().indices.clone();
        let f = |v: &[T]| {
            let (y, _, s) = block_forward(&b, &cfg, &rope, &rebuild(p, &v[1..]), &v[0], Step::train()).unwrap();
            let s = s.unwrap();
            let s_routing = s.routing().unwrap();
            (s_routing.indices == routing).then(|| dot(&y, &r) + dot(&s_routing.scores, &rs))
        };
        let checked = fd_check("moe block", &[vec![x], flat(p)].concat(), &[vec![dx], flat(&g)].concat(), f, &mut rng);
        prop_assert!(checked > 0);
    }

    /// The whole objective — main loss, MTP of depth 2, balance loss — through every block.
    #[test]
    fn objective_total(seed in 0u64..u64::MAX, v3 in any::<bool>(), scope in 0usize..3) {
        let (b, mut rng) = (CpuBackendF64, StdRng::seed_from_u64(seed));
        let cfg = tiny_config(v3, 2);
        let mut model = tiny_model(&cfg, &mut rng);
        let aux = [AuxLoss::None, AuxLoss::Sequence, AuxLoss::Batch][scope];
        let obj = Objective { mtp_depth: 2, mtp_lambda: 0.3, aux, aux_alpha: 0.1 };
        let tokens = ArrayD::from_shape_fn(IxDyn(&[2, 6]), |_| rng.random_range(0..cfg.vocab_size as i64));
        let (_, grads, stats) = objective::loss_and_grads(&b, &model, &tokens, &obj).unwrap();
        let template = model.params.clone();
        let values: Vec<T> = template.leaves().into_iter().map(|(_, _, t)| t.clone()).collect();
        let grad_values: Vec<T> = grads.leaves().into_iter().map(|(_, _, t)| t.clone()).collect();
        let f = |v: &[T]| {
            let mut it = v.iter();
            model.params = template.try_map(|_, _, _| -> Result<T, ()> { Ok(it.next().unwrap().clone()) }).unwrap();
            let pass = objective::forward(&b, &model, &tokens, &obj).unwrap();
            (pass.stats == stats).then_some(pass.total)
        };
        let checked = fd_check("objective", &values, &grad_values, f, &mut rng);
        prop_assert!(checked > 0);
    }
}
