//! Tolerances, each with its reason. No literal tolerance appears inside a test body.

/// f32 reference vs the goldens' float64 PyTorch forward (weights exact in both; the
/// goldens README reports ~1e-6 for an f32 implementation; 1e-5 is the bound).
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
