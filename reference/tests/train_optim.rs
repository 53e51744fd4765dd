//! AdamW and global-norm clipping against an independent f64 transcription of
//! `torch.nn.utils.clip_grad_norm_` + `torch.optim.AdamW` (decoupled weight decay on 2-D
//! weights only; the selection bias untouched).

mod common;

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use v3lab_reference::backend::prelude::*;
use v3lab_reference::model::params::{ParamKind, Params};
use v3lab_reference::train::init::init_params;
use v3lab_reference::train::optim::{clip_coefficient, global_grad_norm, AdamW, AdamWConfig};
use v3lab_reference::{AdamWStep, CpuBackend, ModelConfig};

/// f32 AdamW against the f64 formula: relative error of the parameters after several steps.
const ADAMW_VS_F64: f64 = 1e-6;

fn tiny_config() -> ModelConfig {
    common::tiny_train_config(32)
}

/// One torch AdamW step in f64 on `p, m, v` (plain vectors), step `t` (1-based).
#[allow(clippy::too_many_arguments)]
fn adamw_f64(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, wd: f64, t: i32, c: &AdamWConfig) {
    let (b1, b2, eps) = (c.beta1 as f64, c.beta2 as f64, c.eps as f64);
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let m_hat = m[i] / (1.0 - b1.powi(t));
        let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
        p[i] -= lr * m_hat / denom;
    }
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn random(shape: &[usize], scale: f32, rng: &mut ChaCha8Rng) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(-1.0..1.0f32) * scale)
}

#[test]
fn backend_adamw_step_matches_the_f64_formula() {
    let b = CpuBackend::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let c = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut p = random(&[7, 5], 0.5, &mut rng);
    let (mut m, mut v) = (b.zeros(&[7, 5]).unwrap(), b.zeros(&[7, 5]).unwrap());
    let mut p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let (mut m64, mut v64) = (vec![0.0; 35], vec![0.0; 35]);
    for t in 1..=6u64 {
        let g = random(&[7, 5], 0.1, &mut rng);
        let (lr, scale) = (1e-2 * t as f32, 0.75f32);
        let h = AdamWStep { lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: t, grad_scale: scale };
        b.adamw_step(&mut p, &mut m, &mut v, &g, &h).unwrap();
        let g64: Vec<f64> = g.iter().map(|&x| (x * scale) as f64).collect();
        adamw_f64(&mut p64, &mut m64, &mut v64, &g64, lr as f64, 0.1, t as i32, &c);
    }
    let got: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let err = rel(&got, &p64);
    assert!(err < ADAMW_VS_F64, "AdamW relative error {err:.2e}");
    let moved: f64 = got.iter().zip(&p64).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved < 1e-5, "max abs difference {moved:.2e}");
}

#[test]
fn adamw_decays_matrices_only_and_never_touches_the_selection_bias() {
    let b = CpuBackend::default();
    let cfg = tiny_config();
    let host = init_params(&cfg, 0.02, 3).unwrap();
    // A non-zero selection bias, to see that it stays exactly as it is.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let host: Params<ArrayD<f32>> = host
        .try_map(|_, kind, t| {
            Ok::<_, ()>(if kind == ParamKind::SelectionBias { random(t.shape(), 0.3, &mut rng) } else { t.clone() })
        })
        .unwrap();
    let grads: Params<ArrayD<f32>> = host
        .try_map(|_, kind, t| {
            Ok::<_, ()>(match kind {
                ParamKind::SelectionBias => ArrayD::zeros(t.raw_dim()),
                _ => random(t.shape(), 1.0, &mut rng),
            })
        })
        .unwrap();
    let c = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut params = host.clone();
    let mut opt = AdamW::new(&b, c, &params).unwrap();

    // Independent global norm and clipping coefficient (max_norm 1.0).
    let norm64: f64 =
        grads.leaves().iter().flat_map(|(_, _, g)| g.iter()).map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let norm = global_grad_norm(&b, &grads).unwrap();
    assert!((norm - norm64).abs() / norm64 < 1e-12);
    let coef = clip_coefficient(norm, 1.0);
    assert!(norm > 1.0 && (coef as f64 - 1.0 / (norm64 + 1e-6)).abs() < 1e-7);
    assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
    assert_eq!(clip_coefficient(50.0, 0.0), 1.0, "clip_norm 0 turns clipping off");

    let lr = 1e-3;
    opt.update(&b, &mut params, &grads, lr, coef).unwrap();
    opt.update(&b, &mut params, &grads, lr, coef).unwrap();
    assert_eq!(opt.step, 2);

    let mut kinds_seen = [0; 3];
    for (((name, kind, before), (_, _, after)), (_, _, g)) in
        host.leaves().into_iter().zip(params.leaves()).zip(grads.leaves())
    {
        if kind == ParamKind::SelectionBias {
            kinds_seen[2] += 1;
            assert_eq!(before, after, "{name}: the optimizer must not move the selection bias");
            continue;
        }
        let wd = if kind == ParamKind::Matrix { 0.1 } else { 0.0 };
        kinds_seen[if kind == ParamKind::Matrix { 0 } else { 1 }] += 1;
        let mut p: Vec<f64> = before.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        let g: Vec<f64> = g.iter().map(|&x| (x * coef) as f64).collect();
        for t in 1..=2 {
            adamw_f64(&mut p, &mut m, &mut v, &g, lr as f64, wd, t, &c);
        }
        let got: Vec<f64> = after.iter().map(|&x| x as f64).collect();
        let err = rel(&got, &p);
        assert!(err < ADAMW_VS_F64, "{name} ({kind:?}): relative error {err:.2e}");
        // The decay term is visible: the wrong decay would be off by lr·wd·|p| per step.
        let wrong_wd = if wd > 0.0 { 0.0 } else { 0.1 };
        let mut q: Vec<f64> = before.iter().map(|&x| x as f64).collect();
        let (mut m, mut v) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        for t in 1..=2 {
            adamw_f64(&mut q, &mut m, &mut v, &g, lr as f64, wrong_wd, t, &c);
        }
        let off: f64 = got.iter().zip(&q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(off > 1e-7, "{name}: decayed and undecayed updates must differ (max {off:.2e})");
    }
    assert!(kinds_seen.iter().all(|&n| n > 0), "matrices, norms and biases all present: {kinds_seen:?}");
}

#[test]
fn non_finite_gradients_name_the_tensor() {
    let b = CpuBackend::default();
    let cfg = tiny_config();
    let host = init_params(&cfg, 0.02, 3).unwrap();
    let grads = host
        .try_map(|name, _, t| {
            let mut g = ArrayD::zeros(t.raw_dim());
            if name == "model.layers.1.mlp.experts.2.down_proj.weight" {
                g[[0, 1]] = f32::NAN;
            }
            Ok::<_, ()>(g)
        })
        .unwrap();
    let e = global_grad_norm(&b, &grads).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.mlp.experts.2.down_proj.weight"), "{e}");
}
