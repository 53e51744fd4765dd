//! v3lab's CUDA backend (cudarc; kernels as `.cu` sources compiled by NVRTC at run time).
//! It builds on any machine: the CUDA driver, NVRTC and cuBLAS are loaded dynamically,
//! and [`CudaBackend::new`] probes for them first, so a machine without a GPU gets an
//! error (never a panic) and the tests report themselves skipped.
//!
//! Layout of the crate:
//! - `device`: the backend (context, stream, cuBLAS handle, the sticky error word) and
//!   its tensor types;
//! - `kernels`: the `.cu` sources of `gpu/kernels/`, compiled once per process for the
//!   device's architecture, and launch helpers;
//! - one file per family of `v3lab_reference::backend`, each `impl <Family> for
//!   CudaBackend` directly, every forward beside its backward: `memory` (`MemoryOps`:
//!   upload/download, shapes, zeros), `layout` (`LayoutOps`, one strided-copy kernel),
//!   `elementwise` (`ElementwiseOps`: broadcasting add/mul, scale, sum_axis), `linalg`
//!   (`LinalgOps`: cuBLAS SGEMM), `nn` (`NnOps`: RMSNorm, SwiGLU, RoPE, embedding),
//!   `loss` (`LossOps`: cross-entropy), `attention` (`AttentionOps`, overriding
//!   `latent_attention_forward` with its fused kernel), `routing` (`RoutingOps`: the gate,
//!   row gather/scatter-add, overriding `expert_dispatch` with a device counting sort) and
//!   `optim` (`OptimOps`: AdamW, overriding `sum_squares` with a device reduction). Every
//!   operation, forward and training, runs on the GPU;
//! - `fp8`: E4M3 quantisation (1×128 tiles, 128×128 blocks) and the block-scaled FP8 GEMM,
//!   inherent methods of [`CudaBackend`] (no `Backend` counterpart yet).
//!
//! Nothing in this crate has run on a GPU yet; every kernel has run on the CPU under the
//! emulator of `gpu/emu/` (stand-ins for libcuda, libnvrtc and libcublas, which the
//! dynamic loading picks up through `LD_LIBRARY_PATH`). See `gpu/PERF.md` for what has run.

mod attention;
mod device;
mod elementwise;
mod fp8;
mod kernels;
mod layout;
mod linalg;
mod loss;
mod memory;
mod nn;
mod optim;
mod routing;

pub use device::{CudaBackend, CudaIndices, CudaTensor};
pub use fp8::{Fp8Blocks, Fp8Tensor};
pub use kernels::{compile_all, nvrtc_present};

/// For tests and benches: the backend, or `None` after printing
/// `"skipped: no CUDA device (<reason>)"` where there is no usable device. The line goes
/// straight to stderr, past the test harness's capture, so that `cargo test` shows every
/// skip even when the test passes.
pub fn cuda_or_skip() -> Option<CudaBackend> {
    match CudaBackend::new() {
        Ok(b) => Some(b),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "skipped: no CUDA device ({e})");
            None
        }
    }
}
