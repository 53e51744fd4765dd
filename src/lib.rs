//! v3lab: the ideas of the DeepSeek-V3 technical report, runnable, inspectable and
//! measurable at small scale. This facade re-exports the CPU reference (every component,
//! the `Backend` trait, checkpoints), the CUDA backend and the ablation studies, and holds
//! the [`prelude`] a notebook starts from.

pub mod prelude;

pub use v3lab_ablations as ablations;
pub use v3lab_gpu as gpu;
pub use v3lab_reference::*;
