//! The studies, as values the binaries run: the three of the paper's §4.5 and FP8 training
//! (§3.3, Figure 10).

pub mod aux_free;
pub mod balance_scope;
pub mod fp8;
pub mod mtp;

use v3lab_reference::balance::AuxLoss;
use v3lab_reference::train::config::BalanceConfig;

/// DeepSeek-V3's own balancing (§2.1.2, §4.2): the bias update with γ = 0.001 and an
/// extremely small sequence-wise balance loss (α = 0.0001).
pub const V3_BALANCE: BalanceConfig = BalanceConfig { bias_gamma: 0.001, aux: AuxLoss::Sequence, aux_alpha: 0.0001 };

/// A variant without MTP that differs only in how it balances the experts.
pub(crate) fn balancing(name: &str, bias_gamma: f32, aux: AuxLoss, aux_alpha: f32) -> crate::run::Variant {
    crate::run::Variant::f32(name, 0, vec![(0.0, 0.0)], BalanceConfig { bias_gamma, aux, aux_alpha })
}
