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
//! - `layout`, `blas`, `ops`, `attention`, `routing`, `loss`, `optim`: the `Backend`
//!   primitives by family, each forward beside its backward;
//! - `fp8`: E4M3 quantisation (1×128 tiles, 128×128 blocks) and the block-scaled FP8 GEMM,
//!   inherent methods of [`CudaBackend`] (no `Backend` counterpart yet);
//! - `backend`: `impl Backend for CudaBackend`, delegating to the above.
//!
//! Nothing in this crate has run on a GPU yet; every kernel has run on the CPU under the
//! emulator of `gpu/emu/` (stand-ins for libcuda, libnvrtc and libcublas, which the
//! dynamic loading picks up through `LD_LIBRARY_PATH`). See `gpu/PERF.md` for what has run.

mod attention;
mod backend;
mod blas;
mod device;
mod fp8;
mod kernels;
mod layout;
mod loss;
mod ops;
mod optim;
mod routing;

pub use device::{CudaBackend, CudaIndices, CudaTensor};
pub use fp8::{Fp8Blocks, Fp8Tensor};
pub use kernels::{compile_all, nvrtc_present};

/// For tests and benches: the backend, or `None` after printing
/// "skipped: no CUDA device (<reason>)" where there is no usable device. The line goes
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
