//! FP8 simulation (DeepSeek-V3 §3.3 "FP8 Training", §3.5.2): what each choice of the
//! paper's FP8 recipe does to the numbers.
//!
//! - [`codec`]: minifloat formats (E4M3, E5M2, E5M6, BF16), round to nearest even,
//!   saturating or not (and where PyTorch's cast differs);
//! - [`scaling`]: per-tensor, per-row, 1×128 tile, 128×1 tile and 128×128 block scales,
//!   f32 or power of two; the public code's `act_quant` and `weight_dequant`;
//! - [`accumulate`]: the tensor core's limited-precision accumulation and the paper's
//!   promotion to FP32 every N_C = 128, as an explicit, configurable model, with presets
//!   fitted bit for bit to H100, Ada and B200 measurements (and the paper's readings,
//!   labelled hypotheses);
//! - [`fit`]: the probe GEMMs of the H100 experiment and the search that fits the accumulator
//!   model to measured outputs (whole GEMMs, or single instructions with their C input);
//! - [`hardware`]: reading outputs measured on GPUs (probe GEMMs, a whole GEMM, single
//!   instructions) for the fit;
//! - [`gemm`](mod@gemm): the scaled FP8 GEMM (the public `fp8_gemm`, or `torch._scaled_mm`
//!   with one scale per operand) on top of an accumulator;
//! - [`linear`]: the mixed-precision linear layer of Figure 6 (Fprop, Dgrad, Wgrad in
//!   FP8 or BF16);
//! - [`recipe`]: which of a model's linear layers use it, and the recipe's options (what
//!   `train.json`'s `precision` chooses);
//! - [`study`]: the error-vs-K and scaling-granularity study behind `v3lab fp8 study`.
//!
//! `README.md` in this folder says what is verified and how; `docs/fp8-accumulators.md`
//! how each chip's rule was identified from its measurements.

pub mod accumulate;
pub mod codec;
pub mod fit;
pub mod gemm;
pub mod hardware;
pub mod linear;
pub mod recipe;
pub mod scaling;
pub mod study;

pub use accumulate::{provenance, Accumulator, Anchor, Provenance, Rounding, PRESETS};
pub use codec::round_to_bf16;
pub use codec::{Minifloat, Overflow, BF16, E4M3, E5M2, E5M6};
pub use gemm::{gemm, Scaling};
pub use linear::{Fp8Linear, LinearPrecision, ScalingRecipe};
pub use recipe::{Fp8Recipe, LinearRole, Precision};
pub use scaling::{act_quant, quantize, scale_for, weight_dequant, Granularity, Quantized, ScaleMode};
