//! FP8 simulation (DeepSeek-V3 §3.3): codecs, fine-grained scaling, GEMM with
//! limited-precision accumulation and promotion.

pub mod codec;

pub use codec::{Minifloat, BF16, E4M3, E5M2, E5M6};
