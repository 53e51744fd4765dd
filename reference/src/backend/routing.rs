//! Routing and expert dispatch: the gate's decision (public code: `Gate.forward`), its
//! backward, and the gathers and scatters that move tokens to their experts and back.

use super::{ElementwiseOps, LayoutOps, MemoryOps};
use crate::error::Result;

/// The routing decision of a gate for N tokens.
#[derive(Debug)]
pub struct Routing<B: MemoryOps> {
    /// `[N, K]` combine weights (unbiased scores of the chosen experts, normalised and
    /// multiplied by the route scale).
    pub weights: B::Tensor,
    /// `[N, K]` chosen experts, in descending order of the biased score (as `torch.topk`).
    pub indices: B::Indices,
    /// `[N, E]` unbiased scores (sigmoid or softmax of the gate logits); the balance losses
    /// and the gate's backward read them.
    pub scores: B::Tensor,
}

// By hand: a derive would ask `B: Clone`, and only the tensors are cloned.
impl<B: MemoryOps> Clone for Routing<B> {
    fn clone(&self) -> Self {
        Routing { weights: self.weights.clone(), indices: self.indices.clone(), scores: self.scores.clone() }
    }
}

/// How a gate turns scores into a routing decision (public code: `Gate.forward`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteSpec {
    pub score_func: ScoreFunc,
    /// K: experts per token.
    pub top_k: usize,
    /// G: groups the experts are split into (1: no group limit).
    pub n_groups: usize,
    /// How many groups a token may route into.
    pub topk_groups: usize,
    /// Divide the chosen weights by their sum (the public code does it for sigmoid).
    pub normalize: bool,
    /// Multiplies the combine weights (`routed_scaling_factor`).
    pub route_scale: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunc {
    Sigmoid,
    Softmax,
}

/// Tokens sorted by the expert they are routed to: rows `offsets[e]..offsets[e+1]` of the
/// gathered input belong to expert `e`.
#[derive(Debug, Clone)]
pub struct Dispatch<B: MemoryOps> {
    /// `[N·K]` token row of each gathered row.
    pub token_rows: B::Indices,
    /// `[N·K]` flat index `n·K + k` into the routing weights of each gathered row.
    pub slots: B::Indices,
    /// `[N·K]`: at `n·K .. n·K + K`, the gathered rows of token `n` in gathered (expert)
    /// order. Gathering the expert outputs by it and summing over the K adds each token's
    /// outputs in one fixed order on every backend and every run, which a scatter-add by
    /// `token_rows` leaves to the device's atomics.
    pub rows_by_token: B::Indices,
    /// `E + 1` prefix sums of the per-expert counts (host side: the loop over experts needs them).
    pub offsets: Vec<usize>,
}

family! {
    /// The gate and the movement of tokens to experts (eqs. 12–16 of the report).
    pub trait RoutingOps: MemoryOps + LayoutOps + ElementwiseOps {
        /// The gate after its linear map: `logits [N, E]` → scores (sigmoid or softmax), the
        /// selection `bias [E]` added for choosing only, group limit, top-k, weights from the
        /// unbiased scores (public code: `Gate.forward`). Ties between equal biased scores go
        /// to the lower expert index, by IEEE total order (`f32::total_cmp`) on every backend.
        fn route(&self, logits: &Self::Tensor, bias: Option<&Self::Tensor>, spec: &RouteSpec) -> Result<Routing<Self>>;
        /// Backward of [`RoutingOps::route`] to the gate logits `[N, E]`. The combine weights are
        /// differentiated through the unbiased scores of the chosen experts only (the choice
        /// itself and the selection bias get no gradient): for normalised weights
        /// `w_j = r·s_j / Σ_k s_k` over the chosen, `ds_j = (r/Σs)(dw_j − Σ_k dw_k w_k / r)`.
        /// `dscores [N, E]` (e.g. from a balance loss) adds to every score's gradient. Then
        /// through the score function: `σ(1 − σ)` for sigmoid, the softmax Jacobian otherwise.
        fn route_backward(
            &self,
            routing: &Routing<Self>,
            dweights: &Self::Tensor,
            dscores: Option<&Self::Tensor>,
            spec: &RouteSpec,
        ) -> Result<Self::Tensor>;

        /// Rows `rows [M]` of `x [N, D]`: `[M, D]`.
        fn gather_rows(&self, x: &Self::Tensor, rows: &Self::Indices) -> Result<Self::Tensor>;
        /// `dst [N, D]` with `src [M, D]` added at rows `rows [M]` (repeats accumulate).
        fn scatter_add_rows(&self, dst: &Self::Tensor, rows: &Self::Indices, src: &Self::Tensor) -> Result<Self::Tensor>;

        /// `Σ_j rows[order[n·k + j]]` for each `n`: `rows [M, D]`, `order [N·k]` → `[N, D]`, each
        /// token's `k` rows added from zero in `order`'s order (how the MoE brings expert
        /// outputs back to their tokens, the same on every backend and run). The default
        /// gathers, then sums over the `k`; a backend may do both in one pass.
        fn sum_rows_in_order(&self, rows: &Self::Tensor, order: &Self::Indices, k: usize) -> Result<Self::Tensor> {
            let (shape, pairs) = (self.shape(rows), self.indices_shape(order).iter().product::<usize>());
            if shape.len() != 2 || k == 0 || !pairs.is_multiple_of(k) {
                return Err(crate::Error::shape("sum_rows_in_order", format!("rows {shape:?}, {pairs} indices in groups of {k}")));
            }
            let per_pair = self.reshape(&self.gather_rows(rows, order)?, &[pairs / k, k, shape[1]])?;
            self.reshape(&self.sum_axis(&per_pair, 1)?, &[pairs / k, shape[1]])
        }

        /// Sorts the `N·K` (token, expert) pairs of `indices [N, K]` by expert, stable in token
        /// order, so that each expert's tokens are one contiguous block. The default counts on
        /// the host.
        fn expert_dispatch(&self, indices: &Self::Indices, n_experts: usize) -> Result<Dispatch<Self>> {
            let host = self.download_indices(indices)?;
            let top_k = host.shape().get(1).copied().unwrap_or(1);
            let mut per_expert: Vec<Vec<(i64, i64)>> = vec![Vec::new(); n_experts];
            for (flat, &e) in host.iter().enumerate() {
                let e = usize::try_from(e)
                    .ok()
                    .filter(|&e| e < n_experts)
                    .ok_or_else(|| crate::Error::Input(format!("expert index {e} out of range for {n_experts} experts")))?;
                per_expert[e].push(((flat / top_k) as i64, flat as i64));
            }
            let mut offsets = vec![0];
            let (mut token_rows, mut slots) = (Vec::new(), Vec::new());
            let mut per_token: Vec<Vec<i64>> = vec![Vec::new(); host.len() / top_k.max(1)];
            for pairs in &per_expert {
                for &(token, slot) in pairs {
                    per_token[token as usize].push(token_rows.len() as i64);
                    token_rows.push(token);
                    slots.push(slot);
                }
                offsets.push(token_rows.len());
            }
            let rows_by_token = per_token.concat();
            let to_indices = |v: Vec<i64>| self.upload_indices(ndarray::Array1::from(v).into_dyn().view());
            Ok(Dispatch {
                token_rows: to_indices(token_rows)?,
                slots: to_indices(slots)?,
                rows_by_token: to_indices(rows_by_token)?,
                offsets,
            })
        }
    }
}
