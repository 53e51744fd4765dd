//! v3lab: the ideas of the DeepSeek-V3 technical report, runnable, inspectable and
//! measurable at small scale. This facade re-exports the CPU reference (every component,
//! the `Backend` trait, checkpoints) and the CUDA backend.

pub use v3lab_gpu as gpu;
pub use v3lab_reference::*;
