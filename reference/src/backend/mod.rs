//! The seam between model code and the machine that runs it.
//!
//! Model code is written once, generic over `B: Backend`. A backend owns memory and runs
//! operations; it holds no model logic. Every primitive is small and named the same way on
//! every backend (`rms_norm_forward`, later `rms_norm_backward`, kernel
//! `rms_norm_forward_f32`). Components whose fast version needs fusion (expert dispatch,
//! attention over the latent cache) are default methods composed from primitives: that
//! default is the specification a faster override is checked against by the conformance
//! suite.
//!
//! Shape vocabulary (as the public code's einsums): B batch, S query positions, T key
//! positions, H heads, D model width, C latent (kv_lora_rank), R rotary width, E routed
//! experts, K experts per token, V vocabulary, N flattened tokens.

mod cpu;

pub use cpu::{Cpu, CpuBackend, CpuBackendF64, CpuFloat};

use crate::error::Result;
use ndarray::{ArrayD, ArrayViewD};

/// The routing decision of a gate for N tokens.
#[derive(Debug)]
pub struct Routing<B: Backend> {
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
impl<B: Backend> Clone for Routing<B> {
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
pub struct Dispatch<B: Backend> {
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

/// The hyper-parameters of one AdamW update (Loshchilov & Hutter, decoupled weight decay;
/// DeepSeek-V3 §4.2: β1 0.9, β2 0.95, weight decay 0.1), for [`Backend::adamw_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 0 for tensors that are not decayed (norm gains).
    pub weight_decay: f32,
    /// 1-based count of updates of this tensor, for the bias corrections.
    pub step: u64,
    /// Multiplies the gradient first (global-norm clipping's coefficient, 1 when unclipped).
    pub grad_scale: f32,
}

/// The coefficients of one AdamW update, formed in f64 from an [`AdamWStep`]; each backend
/// rounds them once to its precision, so every backend applies the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWCoefficients {
    /// `1 − lr·wd`, multiplying the parameter first.
    pub decay: f64,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f64,
    /// `√(1 − β2ᵗ)`, dividing `√v`.
    pub bc2_sqrt: f64,
    /// `1 − β1`, the first moment's weight of the new gradient.
    pub one_minus_beta1: f64,
    /// `1 − β2`, the second moment's weight of the new squared gradient.
    pub one_minus_beta2: f64,
}

impl AdamWStep {
    pub fn coefficients(&self) -> AdamWCoefficients {
        let t = self.step.max(1) as i32;
        let (lr, b1, b2) = (f64::from(self.lr), f64::from(self.beta1), f64::from(self.beta2));
        AdamWCoefficients {
            decay: 1.0 - lr * f64::from(self.weight_decay),
            step_size: lr / (1.0 - b1.powi(t)),
            bc2_sqrt: (1.0 - b2.powi(t)).sqrt(),
            one_minus_beta1: 1.0 - b1,
            one_minus_beta2: 1.0 - b2,
        }
    }
}

/// Every operation v3lab's model code needs. The CPU backend is the executable
/// specification; other backends are held to it by `v3lab-conformance`.
pub trait Backend: Send + Sync + Sized + 'static {
    /// A dense floating-point tensor in row-major (standard) layout: f32 on every real
    /// backend; f64 only in [`CpuBackendF64`], which runs the same code for the
    /// finite-difference gradient checks.
    type Tensor: Clone + Send + Sync + std::fmt::Debug;
    /// A dense tensor of integer indices (tokens, experts, rows).
    type Indices: Clone + Send + Sync + std::fmt::Debug;

    fn name(&self) -> &'static str;

    // ----- memory -------------------------------------------------------------------
    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> Result<ArrayD<f32>>;
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<Self::Indices>;
    fn download_indices(&self, t: &Self::Indices) -> Result<ArrayD<i64>>;
    fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
    /// The shape of an index tensor, without copying it off the device.
    fn indices_shape(&self, t: &Self::Indices) -> Vec<usize>;
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;
    /// The tensor widened to f64 (exact for f32 backends): host-side statistics (losses,
    /// balance terms) are computed from it in f64.
    fn download_f64(&self, t: &Self::Tensor) -> Result<ArrayD<f64>>;
    /// A host f64 array in the backend's precision.
    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<Self::Tensor>;

    // ----- layout -------------------------------------------------------------------
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Reorders axes (`axes[i]` is the source axis of output axis i); the result is contiguous.
    fn permute(&self, t: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor>;
    /// Positions `start..start+len` of `axis`.
    fn narrow(&self, t: &Self::Tensor, axis: usize, start: usize, len: usize) -> Result<Self::Tensor>;
    fn concat(&self, parts: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor>;
    /// Repeats a size-1 `axis` `n` times (materialised).
    fn expand(&self, t: &Self::Tensor, axis: usize, n: usize) -> Result<Self::Tensor>;
    /// Writes `src` into `dst` at positions `start..` of `axis` (caches).
    fn write_at(&self, dst: &mut Self::Tensor, src: &Self::Tensor, axis: usize, start: usize) -> Result<()>;

    // ----- elementwise (b broadcasts to a's shape, numpy rules) ---------------------
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    fn scale(&self, a: &Self::Tensor, s: f32) -> Result<Self::Tensor>;
    /// Sum over `axis`, kept with size 1 (the backward of `expand` and of a broadcast).
    fn sum_axis(&self, t: &Self::Tensor, axis: usize) -> Result<Self::Tensor>;

    // ----- linear algebra -----------------------------------------------------------
    /// `x [.., K] · wᵀ` for `w [M, K]`: `[.., M]` (`nn.Linear` without bias).
    fn linear(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    /// Batched product over the leading axis: `a [Bt, M, K] · b [Bt, K, N]`, with either
    /// operand transposed in its last two axes when asked.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor, trans_a: bool, trans_b: bool) -> Result<Self::Tensor>;
    /// Backward of [`Backend::linear`] `y = x wᵀ`: `dx = dy w` `[.., K]` and
    /// `dw = dyᵀ x` `[M, K]` (summed over every leading position).
    fn linear_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)> {
        let dx = self.linear(dy, &self.permute(w, &[1, 0])?)?;
        let (k, m) = (self.shape(x).last().copied().unwrap_or(1), self.shape(w)[0]);
        let rows = self.shape(x).iter().product::<usize>() / k.max(1);
        let dy3 = self.reshape(dy, &[1, rows, m])?;
        let x3 = self.reshape(x, &[1, rows, k])?;
        let dw = self.reshape(&self.matmul(&dy3, &x3, true, false)?, &[m, k])?;
        Ok((dx, dw))
    }

    // ----- norms, activations, rotary, embedding ------------------------------------
    /// RMSNorm over the last axis: `y = x / sqrt(mean(x²) + eps) · w`; also returns the
    /// reciprocal RMS `[..]` that the backward reuses.
    fn rms_norm_forward(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<(Self::Tensor, Self::Tensor)>;
    /// Backward of RMSNorm with the saved reciprocal RMS `rstd`: with `n` the width,
    /// `dx = rstd·(dy⊙w) − x·rstd³·⟨dy⊙w, x⟩/n` and `dw = Σ_rows dy⊙x·rstd`.
    fn rms_norm_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        rstd: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// `silu(gate) · up` (SwiGLU, the public code's `F.silu(w1(x)) * w3(x)`).
    fn swiglu_forward(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
    /// Backward of SwiGLU: `dgate = dy·up·σ(g)(1 + g(1 − σ(g)))`, `dup = dy·silu(g)`.
    fn swiglu_backward(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// Rotary embedding on interleaved pairs `(x[2i], x[2i+1])` of the last axis of
    /// `x [B, S, H, R]`, position `start_pos + s`, angles given by `cos`/`sin [T, R/2]`.
    fn rope_forward(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        start_pos: usize,
    ) -> Result<Self::Tensor>;
    /// Backward of the rotary embedding: the transposed rotation (angle −θ) applied to `dy`.
    fn rope_backward(
        &self,
        dy: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        start_pos: usize,
    ) -> Result<Self::Tensor>;
    /// Rows of `table [V, D]` for `tokens [..]`: `[.., D]`. Ids must be in range (checked
    /// before, where the tokens enter).
    fn embedding_forward(&self, table: &Self::Tensor, tokens: &Self::Indices) -> Result<Self::Tensor>;
    /// Backward of the embedding: `dy [.., D]` scatter-added into a `[vocab, D]` gradient
    /// (a token seen twice gets both rows).
    fn embedding_backward(&self, tokens: &Self::Indices, dy: &Self::Tensor, vocab: usize) -> Result<Self::Tensor>;

    // ----- loss ---------------------------------------------------------------------
    /// Mean cross-entropy of `logits [N, V]` against `targets [N]`:
    /// `1/N Σ_n (lse_n − logits[n, t_n])`; returns the loss (widened to f64) and the
    /// log-sum-exp of each row `[N]` for the backward.
    fn cross_entropy_forward(&self, logits: &Self::Tensor, targets: &Self::Indices) -> Result<(f64, Self::Tensor)>;
    /// `dloss · (softmax(logits) − onehot(targets)) / N`.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Tensor,
        lse: &Self::Tensor,
        targets: &Self::Indices,
        dloss: f32,
    ) -> Result<Self::Tensor>;

    // ----- attention ----------------------------------------------------------------
    /// Causal softmax attention. `q [B, S, H, Dk]` at positions `q_offset..q_offset+S`,
    /// `k [B, T, H, Dk]`, `v [B, T, H, Dv]`; query i sees keys `0..=q_offset+i`.
    /// Returns `out [B, S, H, Dv]` and the log-sum-exp of each score row `[B, H, S]`.
    fn attention_forward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    /// Backward of causal attention (FlashAttention-2's recomputation, Dao 2023, Alg. 2):
    /// `P = exp(scale·q kᵀ − lse)` from the saved `lse [B, H, S]`, `dv = Pᵀ dout`,
    /// `dP = dout vᵀ`, `dS = P ⊙ (dP − rowsum(dout ⊙ out))`, `dq = scale·dS k`,
    /// `dk = scale·dSᵀ q`. Returns `(dq, dk, dv)` shaped as `(q, k, v)`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        out: &Self::Tensor,
        lse: &Self::Tensor,
        dout: &Self::Tensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;

    /// Attention over MLA's absorbed latent cache (the public code's `attn_impl="absorb"`):
    /// `scores = (q_latent · kv_latentᵀ + q_pe · k_peᵀ) · scale`, `out = softmax · kv_latent`.
    /// `q_latent [B, S, H, C]`, `q_pe [B, S, H, R]`, `kv_latent [B, T, C]`, `k_pe [B, T, R]`;
    /// returns `[B, S, H, C]`. Every head shares the one latent key and value (MQA).
    fn latent_attention_forward(
        &self,
        q_latent: &Self::Tensor,
        q_pe: &Self::Tensor,
        kv_latent: &Self::Tensor,
        k_pe: &Self::Tensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<Self::Tensor> {
        let heads = self.shape(q_latent)[2];
        let q = self.concat(&[q_latent, q_pe], 3)?;
        let k = self.concat(&[kv_latent, k_pe], 2)?;
        let [b, t, ck] = self.shape(&k)[..] else { unreachable!("concat of rank-3 tensors") };
        let k = self.expand(&self.reshape(&k, &[b, t, 1, ck])?, 2, heads)?;
        let c = self.shape(kv_latent)[2];
        let v = self.expand(&self.reshape(kv_latent, &[b, t, 1, c])?, 2, heads)?;
        Ok(self.attention_forward(&q, &k, &v, scale, q_offset)?.0)
    }

    // ----- optimizer ----------------------------------------------------------------
    /// One AdamW update of `param` in place, with its moments `m`, `v` (same shape), exactly
    /// as `torch.optim.AdamW`'s single-tensor path: `g = grad·grad_scale`;
    /// `p ← p·(1 − lr·wd)`; `m ← m + (g − m)(1 − β1)`; `v ← v·β2 + (1 − β2)·g²`;
    /// `p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)`. Scalars are formed in f64, then f32.
    fn adamw_step(
        &self,
        param: &mut Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        grad: &Self::Tensor,
        h: &AdamWStep,
    ) -> Result<()>;

    /// `Σ x²` accumulated in f64 (global gradient norm; non-finite when any element is).
    fn sum_squares(&self, t: &Self::Tensor) -> Result<f64> {
        Ok(self.download(t)?.iter().map(|&x| f64::from(x) * f64::from(x)).sum())
    }

    // ----- routing and expert dispatch ----------------------------------------------
    /// The gate after its linear map: `logits [N, E]` → scores (sigmoid or softmax), the
    /// selection `bias [E]` added for choosing only, group limit, top-k, weights from the
    /// unbiased scores (public code: `Gate.forward`).
    fn route(&self, logits: &Self::Tensor, bias: Option<&Self::Tensor>, spec: &RouteSpec) -> Result<Routing<Self>>;
    /// Backward of [`Backend::route`] to the gate logits `[N, E]`. The combine weights are
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

    /// Sorts the `N·K` (token, expert) pairs of `indices [N, K]` by expert, stable in token
    /// order, so that each expert's tokens are one contiguous block.
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
