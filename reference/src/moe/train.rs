//! The hand-written backward of the feed-forward blocks (DeepSeek-V3 eq. 12 and the gate of
//! eqs. 13–16) and what their one forward ([`super::moe_forward`], [`super::mlp_forward`])
//! saves for it, in the style of llm.c.

use crate::backend::{Backend, Dispatch, Routing};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::fp8::{LinearPrecision, LinearRole};
use crate::params::{MlpParams, MoeParams};

/// What [`super::mlp_forward`] keeps for the backward (`save` on). `[.., D]` is the input's shape, F the
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

/// Backward of [`super::mlp_forward`] run with `save` in `precision`: `(d_x, grads)`.
pub fn mlp_backward<B: Backend>(
    b: &B,
    precision: &LinearPrecision,
    p: &MlpParams<B::Tensor>,
    d_y: &B::Tensor,
    s: &MlpSaved<B::Tensor>,
) -> Result<(B::Tensor, MlpParams<B::Tensor>)> {
    let (d_act, d_w2) = b.linear_backward_mixed(&s.act, &p.w2, d_y, precision)?;
    let (d_gate, d_up) = b.swiglu_backward(&s.gate, &s.up, &d_act)?;
    let (d_x_gate, d_w1) = b.linear_backward_mixed(&s.x, &p.w1, &d_gate, precision)?;
    let (d_x_up, d_w3) = b.linear_backward_mixed(&s.x, &p.w3, &d_up, precision)?;
    Ok((b.add(&d_x_gate, &d_x_up)?, MlpParams { w1: d_w1, w2: d_w2, w3: d_w3 }))
}

/// What [`super::moe_forward`] keeps for the backward (`save` on). N tokens, K experts per token, D width.
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

/// Backward of [`super::moe_forward`] run with `save`. `dscores [N, E]`, when given, is an extra gradient on
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
        let precision = cfg.precision.linear(LinearRole::Plain);
        let ran = super::per_expert(b, p.experts.len(), |e| {
            let (start, end) = (s.dispatch.offsets[e], s.dispatch.offsets[e + 1]);
            match &s.experts[e] {
                Some(saved) => {
                    mlp_backward(b, &precision, &p.experts[e], &b.narrow(&d_out, 0, start, end - start)?, saved)
                        .map(|(d_r, d_expert)| (Some(d_r), d_expert))
                }
                None => Ok((None, zeros_like_mlp(b, &p.experts[e])?)),
            }
        })?;
        let mut d_rows = Vec::new();
        for (d_r, d_expert) in ran {
            d_rows.extend(d_r);
            d_experts.push(d_expert);
        }
        let d_rows = b.concat(&d_rows.iter().collect::<Vec<_>>(), 0)?;
        d_x = super::sum_per_token(b, &d_rows, &s.dispatch, n, k)?;
    } else {
        d_x = b.zeros(&[n, d])?;
        for expert in &p.experts {
            d_experts.push(zeros_like_mlp(b, expert)?);
        }
    }
    let d_shared = match (&p.shared, &s.shared) {
        (Some(shared), Some(saved)) => {
            let precision = cfg.precision.linear(LinearRole::Plain);
            let (d_x_shared, d_shared) = mlp_backward(b, &precision, shared, &d_y, saved)?;
            d_x = b.add(&d_x, &d_x_shared)?;
            Some(d_shared)
        }
        _ => None,
    };
    let d_weights = b.reshape(&d_weights, &[n, k])?;
    let d_logits = b.route_backward(&s.routing, &d_weights, d_scores, &cfg.route_spec())?;
    let (d_x_gate, d_gate) = b.linear_backward(&s.x, &p.gate, &d_logits)?; // the gate stays f32
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
