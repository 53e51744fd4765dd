//! Forward with saved activations and hand-written backward of the feed-forward blocks
//! (DeepSeek-V3 eq. 12 and the gate of eqs. 13–16), side by side in the style of llm.c.
//! The forward used for inference ([`super::moe_forward`], [`super::mlp_forward`]) is this
//! forward with the saved activations dropped.

use crate::backend::{Backend, Dispatch, Routing};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::params::{MlpParams, MoeParams};

/// What [`mlp_forward_train`] keeps for the backward. `[.., D]` is the input's shape, F the
/// hidden width.
#[derive(Debug, Clone)]
pub struct MlpSaved<T> {
    /// Input `[.., D]`.
    pub x: T,
    /// `w1 x` `[.., F]` (SwiGLU's gate).
    pub gate: T,
    /// `w3 x` `[.., F]`.
    pub up: T,
    /// `silu(gate) · up` `[.., F]`.
    pub act: T,
}

/// SwiGLU FFN `w2(silu(w1 x) · w3 x)` (the dense blocks, each routed and the shared experts).
pub fn mlp_forward_train<B: Backend>(
    b: &B,
    p: &MlpParams<B::Tensor>,
    x: &B::Tensor,
) -> Result<(B::Tensor, MlpSaved<B::Tensor>)> {
    let gate = b.linear(x, &p.w1)?;
    let up = b.linear(x, &p.w3)?;
    let act = b.swiglu_forward(&gate, &up)?;
    Ok((b.linear(&act, &p.w2)?, MlpSaved { x: x.clone(), gate, up, act }))
}

/// Backward of [`mlp_forward_train`]: `(d_x, grads)`.
pub fn mlp_backward<B: Backend>(
    b: &B,
    p: &MlpParams<B::Tensor>,
    d_y: &B::Tensor,
    s: &MlpSaved<B::Tensor>,
) -> Result<(B::Tensor, MlpParams<B::Tensor>)> {
    let (d_act, d_w2) = b.linear_backward(&s.act, &p.w2, d_y)?;
    let (d_gate, d_up) = b.swiglu_backward(&s.gate, &s.up, &d_act)?;
    let (d_x_gate, d_w1) = b.linear_backward(&s.x, &p.w1, &d_gate)?;
    let (d_x_up, d_w3) = b.linear_backward(&s.x, &p.w3, &d_up)?;
    Ok((b.add(&d_x_gate, &d_x_up)?, MlpParams { w1: d_w1, w2: d_w2, w3: d_w3 }))
}

/// What [`moe_forward_train`] keeps. N tokens, K experts per token, D width.
#[derive(Debug, Clone)]
pub struct MoeSaved<B: Backend> {
    /// The input's shape `[.., D]`.
    pub shape: Vec<usize>,
    /// Input flattened `[N, D]`.
    pub x: B::Tensor,
    /// The gate's decision: weights `[N, K]`, indices `[N, K]`, unbiased scores `[N, E]`.
    pub routing: Routing<B>,
    /// The `N·K` (token, expert) pairs sorted by expert.
    pub dispatch: Dispatch<B>,
    /// The combine weight of each dispatched row `[N·K, 1]`.
    pub row_weights: B::Tensor,
    /// Per routed expert, its saved activations (None when it got no token).
    pub experts: Vec<Option<MlpSaved<B::Tensor>>>,
    /// Unweighted expert outputs of the dispatched rows `[N·K, D]` (None when N = 0).
    pub expert_out: Option<B::Tensor>,
    pub shared: Option<MlpSaved<B::Tensor>>,
}

/// `Σ_k rows[pair (n, k)]` for each token `n`: `rows [N·K, D]` in gathered (expert) order,
/// brought back to each token by `dispatch.rows_by_token` and summed over the K in that
/// order, the same on every backend and run (a scatter-add by token row would leave the
/// order of the K additions to the device's atomics). `[N, D]`.
fn sum_per_token<B: Backend>(b: &B, rows: &B::Tensor, dispatch: &Dispatch<B>, n: usize, k: usize) -> Result<B::Tensor> {
    let d = b.shape(rows)[1];
    let per_pair = b.reshape(&b.gather_rows(rows, &dispatch.rows_by_token)?, &[n, k, d])?;
    b.reshape(&b.sum_axis(&per_pair, 1)?, &[n, d])
}

/// MoE block (eq. 12) on `x [.., D]`: `Σ_shared FFN(u) + Σ_routed g_i FFN_i(u)`.
pub fn moe_forward_train<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    p: &MoeParams<B::Tensor>,
    x: &B::Tensor,
) -> Result<(B::Tensor, MoeSaved<B>)> {
    let shape = b.shape(x);
    let d = cfg.dim;
    let x = b.reshape(x, &[shape.iter().product::<usize>() / d, d])?;
    let n = b.shape(&x)[0];
    let routing = super::gate_forward(b, cfg, p, &x)?;

    // Group the (token, expert) pairs by expert, run each expert on its block of rows,
    // weight each row by its gate value and add it back to its token.
    let dispatch = b.expert_dispatch(&routing.indices, cfg.n_routed_experts)?;
    let rows = b.gather_rows(&x, &dispatch.token_rows)?;
    let weights = b.reshape(&routing.weights, &[n * cfg.n_activated_experts, 1])?;
    let row_weights = b.gather_rows(&weights, &dispatch.slots)?;
    let (mut outputs, mut experts) = (Vec::new(), Vec::new());
    for (e, expert) in p.experts.iter().enumerate() {
        let (start, end) = (dispatch.offsets[e], dispatch.offsets[e + 1]);
        experts.push(if end > start {
            let (y, saved) = mlp_forward_train(b, expert, &b.narrow(&rows, 0, start, end - start)?)?;
            outputs.push(y);
            Some(saved)
        } else {
            None
        });
    }
    let expert_out = if outputs.is_empty() { None } else { Some(b.concat(&outputs.iter().collect::<Vec<_>>(), 0)?) };
    let mut y = match &expert_out {
        Some(out) => sum_per_token(b, &b.mul(out, &row_weights)?, &dispatch, n, cfg.n_activated_experts)?,
        None => b.zeros(&[n, d])?,
    };
    let shared = match &p.shared {
        Some(sp) => {
            let (ys, saved) = mlp_forward_train(b, sp, &x)?;
            y = b.add(&y, &ys)?;
            Some(saved)
        }
        None => None,
    };
    let saved = MoeSaved { shape: shape.clone(), x, routing, dispatch, row_weights, experts, expert_out, shared };
    Ok((b.reshape(&y, &shape)?, saved))
}

/// Backward of [`moe_forward_train`]. `dscores [N, E]`, when given, is an extra gradient on
/// the gate's unbiased scores (from a balance loss). The selection bias gets a zero
/// gradient: it only chooses. Returns `(d_x [.., D], grads)`.
pub fn moe_backward<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    p: &MoeParams<B::Tensor>,
    d_y: &B::Tensor,
    s: &MoeSaved<B>,
    d_scores: Option<&B::Tensor>,
) -> Result<(B::Tensor, MoeParams<B::Tensor>)> {
    let (n, d, k) = (b.shape(&s.x)[0], cfg.dim, cfg.n_activated_experts);
    let d_y = b.reshape(d_y, &[n, d])?;
    let mut d_x;
    let mut d_weights = b.zeros(&[n * k, 1])?;
    let mut d_experts = Vec::with_capacity(p.experts.len());
    if let Some(out) = &s.expert_out {
        // y[token] += w_row · out_row: the rows' gradient, and each weight's ⟨d_y, out⟩.
        let d_routed = b.gather_rows(&d_y, &s.dispatch.token_rows)?;
        let d_row_weights = b.sum_axis(&b.mul(&d_routed, out)?, 1)?;
        d_weights = b.scatter_add_rows(&d_weights, &s.dispatch.slots, &d_row_weights)?;
        let d_out = b.mul(&d_routed, &s.row_weights)?;
        let mut d_rows = Vec::new();
        for (e, (expert, saved)) in p.experts.iter().zip(&s.experts).enumerate() {
            let (start, end) = (s.dispatch.offsets[e], s.dispatch.offsets[e + 1]);
            match saved {
                Some(saved) => {
                    let (d_r, d_expert) = mlp_backward(b, expert, &b.narrow(&d_out, 0, start, end - start)?, saved)?;
                    d_rows.push(d_r);
                    d_experts.push(d_expert);
                }
                None => d_experts.push(zeros_like_mlp(b, expert)?),
            }
        }
        let d_rows = b.concat(&d_rows.iter().collect::<Vec<_>>(), 0)?;
        d_x = sum_per_token(b, &d_rows, &s.dispatch, n, k)?;
    } else {
        d_x = b.zeros(&[n, d])?;
        for expert in &p.experts {
            d_experts.push(zeros_like_mlp(b, expert)?);
        }
    }
    let d_shared = match (&p.shared, &s.shared) {
        (Some(shared), Some(saved)) => {
            let (d_x_shared, d_shared) = mlp_backward(b, shared, &d_y, saved)?;
            d_x = b.add(&d_x, &d_x_shared)?;
            Some(d_shared)
        }
        _ => None,
    };
    let d_weights = b.reshape(&d_weights, &[n, k])?;
    let d_logits = b.route_backward(&s.routing, &d_weights, d_scores, &cfg.route_spec())?;
    let (d_x_gate, d_gate) = b.linear_backward(&s.x, &p.gate, &d_logits)?;
    d_x = b.add(&d_x, &d_x_gate)?;
    // The selection bias only chooses: no gradient (it moves by the balancing rule).
    let d_gate_bias = match &p.gate_bias {
        Some(bias) => Some(b.zeros(&b.shape(bias))?),
        None => None,
    };
    let grads = MoeParams { gate: d_gate, gate_bias: d_gate_bias, experts: d_experts, shared: d_shared };
    Ok((b.reshape(&d_x, &s.shape)?, grads))
}

fn zeros_like_mlp<B: Backend>(b: &B, p: &MlpParams<B::Tensor>) -> Result<MlpParams<B::Tensor>> {
    Ok(MlpParams { w1: b.zeros(&b.shape(&p.w1))?, w2: b.zeros(&b.shape(&p.w2))?, w3: b.zeros(&b.shape(&p.w3))? })
}
