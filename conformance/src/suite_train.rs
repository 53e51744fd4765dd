//! Conformance checks of training: the backward primitives not checked beside their forward
//! (rotary's and attention's are, in `suite_ops`), the loss, the optimizer, and then a
//! whole training step (every loss term, every gradient, the parameters after AdamW) on a
//! random model with MTP and a balance loss, each against [`CpuBackend`].

use crate::suite::{expect_close, expect_indices, rand_array, rng_for, up, up_idx};
use crate::suite_model::{random_config, random_params};
use crate::suite_ops::spec;
use crate::tolerance::*;
use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::backend::AdamWStep;
use v3lab_reference::balance::AuxLoss;
use v3lab_reference::train::objective::{loss_and_grads, Objective};
use v3lab_reference::train::optim::{global_grad_norm, AdamW, AdamWConfig};
use v3lab_reference::{Backend, CpuBackend, ScoreFunc, Transformer};

const CPU: CpuBackend = CpuBackend;

/// RMSNorm and SwiGLU backward, at the forward check's shapes (rows of width 1 to 7168;
/// rotary's backward sits in `check_rope`, beside its forward).
pub fn check_norm_act_backward<B: Backend>(b: &B) {
    let mut rng = rng_for("norm_act_backward");
    for shape in [vec![1, 1], vec![7, 33], vec![2, 65, 257], vec![300, 96], vec![4, 7168]] {
        let d = *shape.last().unwrap();
        let (x, w, dy) = (rand_array(&mut rng, &shape), rand_array(&mut rng, &[d]), rand_array(&mut rng, &shape));
        let (_, rstd) = CPU.rms_norm_forward(&x, &w, 1e-6).unwrap();
        let (dx, dw) = CPU.rms_norm_backward(&x, &w, &rstd, &dy).unwrap();
        let (dx_b, dw_b) = b.rms_norm_backward(&up(b, &x), &up(b, &w), &up(b, &rstd), &up(b, &dy)).unwrap();
        expect_close(b, &format!("rms_norm_backward dx {shape:?}"), &dx_b, &dx, F32_REDUCTION);
        expect_close(b, &format!("rms_norm_backward dw {shape:?}"), &dw_b, &dw, F32_REDUCTION);

        let g = rand_array(&mut rng, &shape).mapv(|v| 6.0 * v);
        let (dg, du) = CPU.swiglu_backward(&g, &x, &dy).unwrap();
        let (dg_b, du_b) = b.swiglu_backward(&up(b, &g), &up(b, &x), &up(b, &dy)).unwrap();
        expect_close(b, &format!("swiglu_backward dgate {shape:?}"), &dg_b, &dg, F32_TRANSCENDENTAL);
        expect_close(b, &format!("swiglu_backward dup {shape:?}"), &du_b, &du, F32_TRANSCENDENTAL);
    }
}

/// The embedding's backward (repeated tokens accumulate, unused rows stay zero) and the
/// cross-entropy forward and backward (vocabularies that are not multiples of a block,
/// rows with large logits); bad ids and targets fail.
pub fn check_embedding_loss<B: Backend>(b: &B) {
    let mut rng = rng_for("embedding_loss");
    for (vocab, d, n) in [(1, 1, 1), (37, 33, 13), (1000, 257, 130)] {
        let tokens = ArrayD::from_shape_simple_fn(IxDyn(&[2, n]), || rng.random_range(0..vocab as i64));
        let dy = rand_array(&mut rng, &[2, n, d]);
        let want = CPU.embedding_backward(&tokens, &dy, vocab).unwrap();
        let got = b.embedding_backward(&up_idx(b, &tokens), &up(b, &dy), vocab).unwrap();
        expect_close(b, &format!("embedding_backward {vocab}×{d} from {n}"), &got, &want, COPY_EXACT);
    }
    for (rows, vocab) in [(1, 1), (7, 33), (130, 1000), (3, 32001)] {
        let logits = rand_array(&mut rng, &[rows, vocab]).mapv(|v| 8.0 * v);
        let targets = ArrayD::from_shape_simple_fn(IxDyn(&[rows]), || rng.random_range(0..vocab as i64));
        let (loss, lse) = CPU.cross_entropy_forward(&logits, &targets).unwrap();
        let (logits_b, targets_b) = (up(b, &logits), up_idx(b, &targets));
        let (loss_b, lse_b) = b.cross_entropy_forward(&logits_b, &targets_b).unwrap();
        let tag = format!("cross_entropy {rows}×{vocab}");
        let loss_err = (loss_b - loss).abs() / loss.abs().max(f64::MIN_POSITIVE);
        assert!(loss_err <= F32_REDUCTION, "{} {tag} loss: {loss_b} vs {loss} (relative {loss_err:.2e})", b.name());
        expect_close(b, &format!("{tag} lse"), &lse_b, &lse, F32_REDUCTION);
        let want = CPU.cross_entropy_backward(&logits, &lse, &targets, 0.7).unwrap();
        let got = b.cross_entropy_backward(&logits_b, &lse_b, &targets_b, 0.7).unwrap();
        expect_close(b, &format!("{tag} backward"), &got, &want, F32_REDUCTION);
    }
    let bad = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1i64, 5]).unwrap();
    let dy = rand_array(&mut rng, &[2, 4]);
    let outcome = b.embedding_backward(&up_idx(b, &bad), &up(b, &dy), 5).and_then(|t| b.download(&t));
    assert!(outcome.is_err(), "{}: embedding_backward with token 5 of 5 must fail", b.name());
    let logits = rand_array(&mut rng, &[2, 5]);
    let outcome = b.cross_entropy_forward(&up(b, &logits), &up_idx(b, &bad)).and_then(|(_, t)| b.download(&t));
    assert!(outcome.is_err(), "{}: cross_entropy with target 5 of 5 must fail", b.name());
    let ok = b.cross_entropy_forward(&up(b, &logits), &up_idx(b, &bad.mapv(|t| t % 5)));
    assert!(ok.and_then(|(_, t)| b.download(&t)).is_ok(), "{}: an error must not outlive its report", b.name());
}

/// The gate's backward: V3 (sigmoid, normalised) with a balance loss's `dscores`, V2
/// (softmax, unnormalised) without, and a single expert per token.
pub fn check_route_backward<B: Backend>(b: &B) {
    let mut rng = rng_for("route_backward");
    let unnormalised = |s: v3lab_reference::RouteSpec| v3lab_reference::RouteSpec { normalize: false, ..s };
    let cases = [
        (48, 64, spec(ScoreFunc::Sigmoid, 6, 8, 4), true),
        (33, 16, unnormalised(spec(ScoreFunc::Softmax, 4, 1, 1)), false),
        (20, 32, spec(ScoreFunc::Softmax, 5, 1, 1), true),
        (7, 6, spec(ScoreFunc::Sigmoid, 1, 1, 1), false),
        (300, 256, spec(ScoreFunc::Sigmoid, 8, 8, 4), true),
    ];
    for (n, e, spec, with_dscores) in cases {
        let logits = rand_array(&mut rng, &[n, e]).mapv(|v| 3.0 * v);
        let routing = CPU.route(&logits, None, &spec).unwrap();
        let dweights = rand_array(&mut rng, &[n, spec.top_k]);
        let dscores = rand_array(&mut rng, &[n, e]).mapv(|v| 0.1 * v);
        let want = CPU.route_backward(&routing, &dweights, with_dscores.then_some(&dscores), &spec).unwrap();
        let routing_b = b.route(&up(b, &logits), None, &spec).unwrap();
        let tag = format!("route_backward {n}×{e} {spec:?} dscores {with_dscores}");
        expect_indices(b, &format!("{tag} (the forward's indices)"), &routing_b.indices, &routing.indices);
        let dscores_b = up(b, &dscores);
        let got = b.route_backward(&routing_b, &up(b, &dweights), with_dscores.then_some(&dscores_b), &spec).unwrap();
        expect_close(b, &tag, &got, &want, F32_REDUCTION);
    }
    // An expert index out of range is an error, at the call or at the next download.
    let spec = spec(ScoreFunc::Sigmoid, 2, 1, 1);
    let logits = rand_array(&mut rng, &[3, 4]);
    let r = b.route(&up(b, &logits), None, &spec).unwrap();
    let bad = v3lab_reference::Routing::<B> { indices: up_idx(b, &ArrayD::from_elem(IxDyn(&[3, 2]), 4i64)), ..r };
    let outcome = b.route_backward(&bad, &up(b, &rand_array(&mut rng, &[3, 2])), None, &spec);
    assert!(outcome.and_then(|t| b.download(&t)).is_err(), "{}: expert 4 of 4 must fail", b.name());
}

/// AdamW over several steps (decayed and not, clipped and not, the first step's bias
/// corrections and later ones), and the f64 sums of squares of gradient clipping.
pub fn check_optimizer<B: Backend>(b: &B) {
    let mut rng = rng_for("optimizer");
    for shape in [vec![1], vec![33, 7], vec![1000, 257]] {
        let p0 = rand_array(&mut rng, &shape);
        let (mut p, mut m, mut v) = (p0.clone(), CPU.zeros(&shape).unwrap(), CPU.zeros(&shape).unwrap());
        let (mut pb, mut mb, mut vb) = (up(b, &p0), b.zeros(&shape).unwrap(), b.zeros(&shape).unwrap());
        let kept = pb.clone();
        for step in 1..=4u64 {
            let grad = rand_array(&mut rng, &shape).mapv(|g| g * 10f32.powi(step as i32 - 3));
            let h = AdamWStep {
                lr: 3e-3 / step as f32,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: if step % 2 == 0 { 0.1 } else { 0.0 },
                step,
                grad_scale: if step == 3 { 0.37 } else { 1.0 },
            };
            CPU.adamw_step(&mut p, &mut m, &mut v, &grad, &h).unwrap();
            b.adamw_step(&mut pb, &mut mb, &mut vb, &up(b, &grad), &h).unwrap();
            let tag = format!("adamw {shape:?} step {step}");
            expect_close(b, &format!("{tag} param"), &pb, &p, F32_ELEMENTWISE);
            expect_close(b, &format!("{tag} m"), &mb, &m, F32_ELEMENTWISE);
            expect_close(b, &format!("{tag} v"), &vb, &v, F32_ELEMENTWISE);
        }
        expect_close(b, &format!("adamw {shape:?} leaves a shared buffer alone"), &kept, &p0, COPY_EXACT);

        let x = rand_array(&mut rng, &shape).mapv(|v| v * 1e3);
        let (want, got) = (CPU.sum_squares(&x).unwrap(), b.sum_squares(&up(b, &x)).unwrap());
        let err = (got - want).abs() / want;
        assert!(err <= F64_SUM, "{} sum_squares {shape:?}: {got} vs {want} (relative {err:.2e})", b.name());
    }
}

/// A whole training step on a random model with every feature on (MTP depth 1, the
/// sequence-wise balance loss, sigmoid gate with groups and bias): the loss terms, the
/// loads (routing decided identically), every gradient, the global norm, and the
/// parameters after two AdamW updates.
pub fn check_training_step<B: Backend>(b: &B) {
    let mut cfg = random_config(false);
    cfg.n_mtp_layers = 1;
    let host = random_params(&cfg, 5);
    let mut m_cpu = Transformer::new(&CPU, cfg.clone(), &host).unwrap();
    let mut m_dev = Transformer::new(b, cfg.clone(), &host).unwrap();
    let obj = Objective { mtp_depth: 1, mtp_lambda: 0.3, aux: AuxLoss::Sequence, aux_alpha: 0.01 };
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let (mut opt_cpu, mut opt_dev) =
        (AdamW::new(&CPU, adamw, &m_cpu.params).unwrap(), AdamW::new(b, adamw, &m_dev.params).unwrap());
    let mut rng = rng_for("training_step");
    for step in 0..2 {
        let tokens = ArrayD::from_shape_simple_fn(IxDyn(&[2, 17]), || rng.random_range(0..cfg.vocab_size as i64));
        let (l_cpu, g_cpu, s_cpu) = loss_and_grads(&CPU, &m_cpu, &up_idx(&CPU, &tokens), &obj).unwrap();
        let (l_dev, g_dev, s_dev) = loss_and_grads(b, &m_dev, &up_idx(b, &tokens), &obj).unwrap();
        assert_eq!(s_dev.loads, s_cpu.loads, "{} step {step}: expert loads (routing) differ", b.name());
        for (what, got, want) in
            [("total", l_dev.total, l_cpu.total), ("main", l_dev.main, l_cpu.main), ("mtp", l_dev.mtp, l_cpu.mtp)]
        {
            let err = f64::from((got - want).abs() / want.abs());
            assert!(err <= F32_MODEL, "{} step {step} loss {what}: {got} vs {want} ({err:.2e})", b.name());
        }
        let aux_err = f64::from((l_dev.aux - l_cpu.aux).abs() / l_cpu.aux.abs().max(f32::MIN_POSITIVE));
        assert!(aux_err <= F32_MODEL, "{} step {step} aux loss: {} vs {}", b.name(), l_dev.aux, l_cpu.aux);
        for ((name, _, got), (_, _, want)) in g_dev.leaves().into_iter().zip(g_cpu.leaves()) {
            expect_close(b, &format!("step {step} gradient of {name}"), got, want, F32_GRADIENTS);
        }
        let (n_cpu, n_dev) = (global_grad_norm(&CPU, &g_cpu).unwrap(), global_grad_norm(b, &g_dev).unwrap());
        let norm_err = (n_dev - n_cpu).abs() / n_cpu;
        assert!(norm_err <= F32_GRADIENTS, "{} step {step} gradient norm: {n_dev} vs {n_cpu}", b.name());
        opt_cpu.update(&CPU, &mut m_cpu.params, &g_cpu, 1e-3, 0.5).unwrap();
        opt_dev.update(b, &mut m_dev.params, &g_dev, 1e-3, 0.5).unwrap();
    }
    for ((name, _, got), (_, _, want)) in m_dev.params.leaves().into_iter().zip(m_cpu.params.leaves()) {
        expect_close(b, &format!("{name} after two AdamW steps"), got, want, WEIGHTS_AFTER_STEPS);
    }
}
