//! Tolerances, each with its reason. No literal tolerance appears inside a test body.

/// f32 reference vs the goldens' float64 PyTorch forward (weights exact in both; the
/// goldens README reports ~1e-6 for an f32 implementation; 1e-5 is the bound).
pub const LOGITS_VS_PYTORCH: f64 = 1e-5;
/// Same bound for every intermediate of the forward (embedding, blocks, gate weights).
pub const FORWARD_VS_PYTORCH: f64 = 1e-5;
/// Two f32 computations of the same quantity on the CPU in different orders (naive vs
/// absorbed attention): a few ulps of f32 amplified by depth, far below 1e-5.
pub const CPU_F32_REORDERED: f64 = 1e-5;
