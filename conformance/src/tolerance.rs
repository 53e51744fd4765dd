//! Tolerances, each with its reason. No literal tolerance appears inside a test body.
//! All are relative errors `‖out − ref‖ / ‖ref‖` over a whole tensor.

/// f32 reference vs the goldens' float64 PyTorch forward (weights exact in both; the
/// goldens README reports ~1e-6 for an f32 implementation; 1e-5 is the bound).
/// The CUDA backend is held to the same bound on the goldens.
pub const LOGITS_VS_PYTORCH: f64 = 1e-5;
/// Same bound for every intermediate of the forward (embedding, blocks, gate weights).
pub const FORWARD_VS_PYTORCH: f64 = 1e-5;
/// Two f32 computations of the same quantity on the CPU in different orders (naive vs
/// absorbed attention): a few ulps of f32 amplified by depth, far below 1e-5.
pub const CPU_F32_REORDERED: f64 = 1e-5;
/// The gradient of each loss term per tensor, f32 backward vs the goldens' float64 autograd
/// (the bound; a few f32 roundings per op accumulated over ~4 blocks land near 1e-6).
pub const GRAD_VS_PYTORCH: f64 = 1e-4;
/// Loss values and gradient norms over five steps (the bound): the losses are f32
/// reductions of f32 activations, the weights drift by f32 AdamW rounding.
pub const HISTORY_VS_PYTORCH: f64 = 1e-5;
/// Every weight after five AdamW steps (the bound).
pub const WEIGHTS_AFTER_STEPS: f64 = 1e-4;
/// A selection bias after the sign updates: the signs (hence the loads) must match exactly,
/// but our bias is f32 while the goldens' is f64; b₀ + Σ ±0.05 in f32 is off by a few ulps
/// of ~1 (1.2e-7 each), far below the γ = 0.05 of one wrong sign.
pub const BIAS_F32_ROUNDING: f64 = 1e-6;

// ----- a backend against the CPU reference (the generic suite) ---------------------------

/// Pure data movement (layout ops, gathers, embedding) and single IEEE operations per
/// element (add, mul, scale): both sides must produce the same bits.
pub const COPY_EXACT: f64 = 0.0;
/// One transcendental per element or an order-dependent sum of two terms (rotary:
/// `re·c − im·s`, where a GPU may fuse into an FMA; scatter-add of repeated rows in
/// atomic order): a few ulps, 2^-23 ≈ 1.2e-7 each; 1e-6 leaves room for ~8 ulps.
pub const F32_ELEMENTWISE: f64 = 1e-6;
/// `expf` (CUDA: max 2 ulp) against Rust's `exp` (correctly rounded or 1 ulp), divided
/// and multiplied once more (SwiGLU, sigmoid/softmax scores, normalised gate weights).
pub const F32_TRANSCENDENTAL: f64 = 2e-6;
/// Reductions in a different order (GEMM in cuBLAS's blocking vs matrixmultiply's,
/// tree-reduced RMS, tiled online softmax): the error of an f32 sum of K terms grows like
/// √K·2^-24 in practice, ~1e-6 at K = 10^4; full f32 math (no TF32, whose 10-bit mantissa
/// would give ~1e-3). 1e-5 is the f32 bound.
pub const F32_REDUCTION: f64 = 1e-5;
/// A component or a whole model (a few layers of the above in sequence, routing decided
/// identically): same bound, the per-op errors do not compound beyond it at these depths.
pub const F32_MODEL: f64 = 1e-5;
/// Every gradient of a whole training step, both sides f32: the backward runs about twice
/// the forward's reductions, and a weight's gradient sums over every token. The CPU's f32
/// gradients sit within 2.8e-5 of the goldens' float64 ones, so two f32 orders differ by
/// less than that; the bound is the goldens' GRAD_VS_PYTORCH.
pub const F32_GRADIENTS: f64 = GRAD_VS_PYTORCH;
/// Σ x² accumulated in f64 in two orders (sequential vs per-block partials): n terms of
/// relative error 2^-53 each, ~1e-13 at n = 10^6.
pub const F64_SUM: f64 = 1e-12;

// ----- FP8 (CUDA inherent methods against the host oracle) -------------------------------

/// E4M3 bit patterns of a quantisation: round-to-nearest-even is exact arithmetic, so the
/// device and the oracle must agree bit for bit (and the scales, one product
/// `max(amax, 1e-4) × (1/448)` as the reference's `fp8::scale_for`, bit for bit too).
pub const FP8_BITS: f64 = 0.0;
/// Block-scaled FP8 GEMM against the f64 product of the decoded operands with the same
/// scales: the products of E4M3 values are exact in f32; what differs is the f32
/// accumulation over K (≤ a few thousand terms) and the promotion per 128-block.
pub const FP8_GEMM_VS_HOST: f64 = 1e-5;
