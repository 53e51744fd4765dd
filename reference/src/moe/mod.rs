//! DeepSeekMoE (DeepSeek-V3 §2.1.2, eqs. 12–16; the public code's `Gate`, `MoE`, `MLP`).
//!
//! `h' = u + Σ_shared FFN_i(u) + Σ_routed g_i FFN_i(u)` (eq. 12). The gate scores every
//! routed expert, `s_i = sigmoid(u·e_i)` (V3) or a softmax (V2) (eq. 15); a selection bias
//! `b_i` is added for choosing only (§2.1.2, aux-loss-free balancing, eq. 16); with groups,
//! a token may route only into the `topk_groups` best groups (node-limited routing);
//! the combine weights are the unbiased scores of the chosen experts, normalised for
//! sigmoid (eq. 13) and multiplied by the route scale. The arithmetic of routing lives in
//! `Backend::route` (CPU: `backend/cpu/routing.rs`), this module composes it with the experts.
//!
//! | eq. | what | where |
//! |---|---|---|
//! | 12 | `h' = u + Σ FFN^(s)(u) + Σ g_i FFN^(r)_i(u)` | [`moe_forward`] (one forward: `save` keeps what the backward needs); FFN: [`mlp_forward`] |
//! | 13 | `g_i = g'_i / Σ g'_j` | `Backend::route` (`RouteSpec::normalize`), times `route_scale` |
//! | 14 | `g'_i = s_i` if `s_i` is in the top-K_r, else 0 | `Backend::route` (CPU `gate_row`, `top_k_desc`) |
//! | 15 | `s_i = sigmoid(u·e_i)` | [`gate_forward`] (the logits), `Backend::route` (the sigmoid) |
//! | 16 | the top-K_r chosen by `s_i + b_i`, weights from `s_i` | `Backend::route` with the selection bias |
//! | | backward of 12–15 | [`train::moe_backward`], `Backend::route_backward` |

pub mod train;

use crate::backend::{Backend, Dispatch, MemoryOps, Routing};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::fp8::{LinearPrecision, LinearRole};
use crate::params::{MlpParams, MoeParams};
use rayon::prelude::*;
use train::{MlpSaved, MoeSaved};

/// What [`mlp_forward`] returns: the output and, with `save`, what the backward needs.
pub type MlpOut<T> = (T, Option<MlpSaved<T>>);
/// What [`moe_forward`] returns: the output, the routing, and with `save` the saved state.
pub type MoeOut<B> = (<B as MemoryOps>::Tensor, Routing<B>, Option<MoeSaved<B>>);

/// SwiGLU feed-forward, `w2(silu(w1 x) · w3 x)`: the dense blocks, each routed expert and
/// the shared experts, its three linears in `precision`. With `save`, what
/// [`train::mlp_backward`] needs is kept.
pub fn mlp_forward<B: Backend>(
    b: &B,
    precision: &LinearPrecision,
    p: &MlpParams<B::Tensor>,
    x: &B::Tensor,
    save: bool,
) -> Result<MlpOut<B::Tensor>> {
    let gate = b.linear_mixed(x, &p.w1, precision)?;
    let up = b.linear_mixed(x, &p.w3, precision)?;
    let act = b.swiglu_forward(&gate, &up)?;
    let y = b.linear_mixed(&act, &p.w2, precision)?;
    Ok((y, save.then(|| MlpSaved { x: x.clone(), gate, up, act })))
}

/// The gate on `x [N, D]`, in f32 whatever the model's precision (§3.3.1 keeps "MoE gating
/// modules" in their original precision).
pub fn gate_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    p: &MoeParams<B::Tensor>,
    x: &B::Tensor,
) -> Result<Routing<B>> {
    b.route(&b.linear(x, &p.gate)?, p.gate_bias.as_ref(), &cfg.route_spec())
}

/// `Σ_k rows[pair (n, k)]` for each token `n`: `rows [N·K, D]` in gathered (expert) order,
/// brought back to each token by `dispatch.rows_by_token` and summed over the K in that
/// order, the same on every backend and run (a scatter-add by token row would leave the
/// order of the K additions to the device's atomics). `[N, D]`.
pub(crate) fn sum_per_token<B: Backend>(
    b: &B,
    rows: &B::Tensor,
    dispatch: &Dispatch<B>,
    n: usize,
    k: usize,
) -> Result<B::Tensor> {
    let summed = b.sum_rows_in_order(rows, &dispatch.rows_by_token, k)?;
    debug_assert_eq!(b.shape(&summed)[0], n, "one row per token");
    Ok(summed)
}

/// `f(e)` for each of `n` experts, in expert order. Where the backend issues host work on
/// several threads (the CPU), experts run side by side: each one's products are small
/// (about N·K/E rows), too small to keep every thread busy alone. Each expert is computed
/// by itself either way, so the results are the same bits.
pub(crate) fn per_expert<B: Backend, T: Send>(
    b: &B,
    n: usize,
    f: impl Fn(usize) -> Result<T> + Sync + Send,
) -> Result<Vec<T>> {
    if b.host_threads() > 1 {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// MoE block (eq. 12) on `x [.., D]`: `Σ_shared FFN(u) + Σ_routed g_i FFN_i(u)`, the routing
/// it chose, and with `save` what [`train::moe_backward`] needs.
pub fn moe_forward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    p: &MoeParams<B::Tensor>,
    x: &B::Tensor,
    save: bool,
) -> Result<MoeOut<B>> {
    let shape = b.shape(x);
    let d = cfg.dim;
    let x = b.reshape(x, &[shape.iter().product::<usize>() / d, d])?;
    let n = b.shape(&x)[0];
    let routing = gate_forward(b, cfg, p, &x)?;

    // Group the (token, expert) pairs by expert, run each expert on its block of rows,
    // weight each row by its gate value and add it back to its token.
    let dispatch = b.expert_dispatch(&routing.indices, cfg.n_routed_experts)?;
    let rows = b.gather_rows(&x, &dispatch.token_rows)?;
    let weights = b.reshape(&routing.weights, &[n * cfg.n_activated_experts, 1])?;
    let row_weights = b.gather_rows(&weights, &dispatch.slots)?;
    let precision = cfg.precision.linear(LinearRole::Plain);
    let ran = per_expert(b, p.experts.len(), |e| {
        let (start, end) = (dispatch.offsets[e], dispatch.offsets[e + 1]);
        if end == start {
            return Ok(None); // no token chose this expert
        }
        mlp_forward(b, &precision, &p.experts[e], &b.narrow(&rows, 0, start, end - start)?, save).map(Some)
    })?;
    let (mut outputs, mut experts) = (Vec::new(), Vec::new());
    for ran in ran {
        match ran {
            Some((y, saved)) => {
                outputs.push(y);
                experts.push(saved);
            }
            None => experts.push(None),
        }
    }
    let expert_out = if outputs.is_empty() { None } else { Some(b.concat(&outputs.iter().collect::<Vec<_>>(), 0)?) };
    let mut y = match &expert_out {
        Some(out) => sum_per_token(b, &b.mul(out, &row_weights)?, &dispatch, n, cfg.n_activated_experts)?,
        None => b.zeros(&[n, d])?,
    };
    let shared = match &p.shared {
        Some(sp) => {
            let (ys, saved) = mlp_forward(b, &precision, sp, &x, save)?;
            y = b.add(&y, &ys)?;
            saved
        }
        None => None,
    };
    let y = b.reshape(&y, &shape)?;
    let saved = save.then(|| MoeSaved {
        shape,
        x,
        routing: routing.clone(),
        dispatch,
        row_weights,
        experts,
        expert_out,
        shared,
    });
    Ok((y, routing, saved))
}

#[cfg(test)]
mod tests {
    use crate::backend::prelude::*;
    use crate::backend::{CpuBackend, RouteSpec, ScoreFunc};
    use ndarray::{Array1, Array2};
    use proptest::prelude::*;

    /// (groups, kept groups, experts per group, top-k, with bias, sigmoid?)
    fn spec_strategy() -> impl Strategy<Value = (RouteSpec, usize, bool)> {
        (1usize..5, 2usize..6, any::<bool>(), any::<bool>()).prop_flat_map(|(groups, per_group, with_bias, sigmoid)| {
            (1..=groups, Just((groups, per_group, with_bias, sigmoid))).prop_flat_map(|(kept, (g, pg, wb, sig))| {
                (1..=kept * pg).prop_map(move |top_k| {
                    let spec = RouteSpec {
                        score_func: if sig { ScoreFunc::Sigmoid } else { ScoreFunc::Softmax },
                        top_k,
                        n_groups: g,
                        topk_groups: kept,
                        normalize: sig,
                        route_scale: 2.5,
                    };
                    (spec, g * pg, wb)
                })
            })
        })
    }

    proptest! {
        #[test]
        fn gate_invariants((spec, n_experts, with_bias) in spec_strategy(), seed in 0u64..1000) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let tokens = 7;
            let logits = Array2::from_shape_fn((tokens, n_experts), |_| rng.random_range(-3.0f32..3.0)).into_dyn();
            let bias = Array1::from_shape_fn(n_experts, |_| rng.random_range(-0.5f32..0.5)).into_dyn();
            let b = CpuBackend;
            let r = b.route(&logits, with_bias.then_some(&bias), &spec).unwrap();
            let per_group = n_experts / spec.n_groups;
            for t in 0..tokens {
                let chosen: Vec<usize> = r.indices.slice(ndarray::s![t, ..]).iter().map(|&e| e as usize).collect();
                // k distinct experts
                let mut sorted = chosen.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), spec.top_k);
                // inside at most `topk_groups` groups
                let mut groups: Vec<usize> = chosen.iter().map(|e| e / per_group).collect();
                groups.sort();
                groups.dedup();
                prop_assert!(groups.len() <= spec.topk_groups);
                // weights are the unbiased scores of the chosen experts, rescaled
                let w = r.weights.slice(ndarray::s![t, ..]);
                let raw: Vec<f32> = chosen.iter().map(|&e| r.scores[[t, e]]).collect();
                let sum: f32 = raw.iter().sum();
                for (j, &s) in raw.iter().enumerate() {
                    let want = if spec.normalize { s / sum } else { s } * spec.route_scale;
                    prop_assert!((w[j] - want).abs() <= 1e-5 * want.abs().max(1e-3));
                }
                if spec.normalize {
                    prop_assert!((w.sum() - spec.route_scale).abs() < 1e-5 * spec.route_scale);
                }
                // no expert outside the choice beats a chosen one within the kept groups
                let biased = |e: usize| r.scores[[t, e]] + if with_bias { bias[e] } else { 0.0 };
                let worst = chosen.iter().map(|&e| biased(e)).fold(f32::INFINITY, f32::min);
                for e in 0..n_experts {
                    if !chosen.contains(&e) && groups.contains(&(e / per_group)) {
                        prop_assert!(biased(e) <= worst);
                    }
                }
            }
        }

        #[test]
        fn dispatch_invariants(tokens in 0usize..20, k in 1usize..4, extra in 0usize..6, seed in 0u64..1000) {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let n_experts = k + extra;
            let mut flat = Vec::new();
            let mut experts: Vec<i64> = (0..n_experts as i64).collect();
            for _ in 0..tokens {
                experts.shuffle(&mut rng);
                flat.extend_from_slice(&experts[..k]);
            }
            let indices = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[tokens, k]), flat.clone()).unwrap();
            let d = CpuBackend.expert_dispatch(&indices, n_experts).unwrap();
            // Gathered rows are the pairs sorted by expert, then by flat index (stable).
            let mut order: Vec<usize> = (0..flat.len()).collect();
            order.sort_by_key(|&i| (flat[i], i));
            prop_assert_eq!(d.slots.iter().map(|&s| s as usize).collect::<Vec<_>>(), order.clone());
            prop_assert_eq!(d.token_rows.iter().map(|&t| t as usize).collect::<Vec<_>>(), order.iter().map(|i| i / k).collect::<Vec<_>>());
            for e in 0..n_experts {
                prop_assert_eq!(d.offsets[e + 1] - d.offsets[e], flat.iter().filter(|&&x| x == e as i64).count());
            }
            // Each token's K gathered rows, ascending: the order its outputs are summed in.
            for n in 0..tokens {
                let mut mine: Vec<i64> = (0..order.len()).filter(|&r| order[r] / k == n).map(|r| r as i64).collect();
                mine.sort();
                prop_assert_eq!(d.rows_by_token.slice(ndarray::s![n * k..(n + 1) * k]).to_vec(), mine);
            }
        }
    }
}
