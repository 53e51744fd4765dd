//! The CPU backend: the executable specification. Plain floating point over `ndarray`, no
//! `unsafe` but the calls into the gemm crate (`product.rs`: it writes a product's fresh,
//! unzeroed result) and [`tune_allocator`]'s into glibc. Matrix products go through the gemm
//! crate (packed, threaded, AVX-512 where the CPU has it), or, with few rows (decoding), row
//! by row without packing. Loops over independent (batch, head) pairs use rayon, and so does
//! element-wise and row-wise work on large tensors ([`PARALLEL_ELEMENTS`], the `zip!` macro):
//! each element or row is computed by one thread in the same order either way, so the split
//! never changes a bit. Nothing else is clever.
//!
//! It is generic over its float, [`Cpu<F>`]: [`CpuBackend`] (`Cpu<f32>`) is the reference;
//! [`CpuBackendF64`] runs the very same code in f64 so that every backward can be checked
//! against central finite differences without f32 rounding drowning the signal. Each
//! family of [`crate::Backend`] is implemented in the file of its name, forward above
//! backward: `memory.rs`, `layout.rs`, `elementwise.rs`, `linalg.rs` (with `product.rs`),
//! `nn.rs` (RMSNorm, SwiGLU, rotary, embedding), `loss.rs` (cross-entropy),
//! `attention.rs`, `routing.rs` (gate, dispatch), `optim.rs` (AdamW).

mod attention;
mod elementwise;
mod layout;
mod linalg;
mod loss;
mod memory;
mod nn;
mod optim;
pub(crate) mod product;
mod routing;

use crate::error::{Error, Result};
use ndarray::{ArrayD, ArrayView2, Ix2};
use std::marker::PhantomData;

/// The float a [`Cpu`] backend computes in (f32 or f64).
pub trait CpuFloat:
    num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + Send
    + Sync
    + std::fmt::Debug
    + Default
    + 'static
{
    fn of_f64(x: f64) -> Self;
    fn of_f32(x: f32) -> Self;
    fn as_f64(self) -> f64;
    fn as_f32(self) -> f32;
}

impl CpuFloat for f32 {
    fn of_f64(x: f64) -> Self {
        x as f32
    }
    fn of_f32(x: f32) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    fn as_f32(self) -> f32 {
        self
    }
}

impl CpuFloat for f64 {
    fn of_f64(x: f64) -> Self {
        x
    }
    fn of_f32(x: f32) -> Self {
        f64::from(x)
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn as_f32(self) -> f32 {
        self as f32
    }
}

/// The CPU backend computing in `F`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu<F>(PhantomData<F>);

/// The reference backend (f32).
pub type CpuBackend = Cpu<f32>;
/// The value of [`CpuBackend`](type@CpuBackend), so that `let b = CpuBackend;` reads as for a unit struct.
#[allow(non_upper_case_globals)]
pub const CpuBackend: CpuBackend = Cpu(PhantomData);
/// The same code in f64, for finite-difference gradient checks.
pub type CpuBackendF64 = Cpu<f64>;
/// The value of [`CpuBackendF64`](type@CpuBackendF64).
#[allow(non_upper_case_globals)]
pub const CpuBackendF64: CpuBackendF64 = Cpu(PhantomData);

/// Element-wise or row-wise work on at least this many values is split across rayon's
/// threads; below it (a decoding step's tensors), handing it out costs more than it saves.
pub(crate) const PARALLEL_ELEMENTS: usize = 1 << 15;

/// Whether work over `len` values is worth splitting across threads.
pub(crate) fn parallel(len: usize) -> bool {
    len >= PARALLEL_ELEMENTS && rayon::current_num_threads() > 1
}

/// `zip!(len, zip.map_collect(f))` or `zip!(len, zip.for_each(f))` on an ndarray `Zip`:
/// run by its parallel twin (`par_map_collect`, `par_for_each`) where [`parallel`]`(len)`.
/// Each element's result is the same either way.
macro_rules! zip {
    ($len:expr, $zip:expr, map_collect($f:expr)) => {{
        let len = $len;
        let (zip, f) = ($zip, $f);
        if $crate::backend::cpu::parallel(len) {
            zip.par_map_collect(f)
        } else {
            zip.map_collect(f)
        }
    }};
    ($len:expr, $zip:expr, for_each($f:expr)) => {{
        let len = $len;
        let (zip, f) = ($zip, $f);
        if $crate::backend::cpu::parallel(len) {
            zip.par_for_each(f)
        } else {
            zip.for_each(f)
        }
    }};
}
pub(crate) use zip;

pub(crate) fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::shape(op, msg)
}

pub(crate) fn as2<'a, F>(t: &'a ArrayD<F>, op: &'static str) -> Result<ArrayView2<'a, F>> {
    t.view().into_dimensionality::<Ix2>().map_err(|_| shape_err(op, format!("expected rank 2, got {:?}", t.shape())))
}

/// `t` viewed as `[rows, last]`.
pub(crate) fn rows_view<'a, F>(t: &'a ArrayD<F>, op: &'static str) -> Result<ArrayView2<'a, F>> {
    let last = *t.shape().last().ok_or_else(|| shape_err(op, "scalar operand"))?;
    let rows = t.len() / last.max(1);
    t.view().into_shape_with_order((rows, last)).map_err(|e| shape_err(op, e.to_string()))
}

/// Keeps freed tensors' memory in the process for the next ones (glibc on Linux; elsewhere a
/// no-op). By default glibc serves every allocation above 128 KiB (the threshold then
/// adapts) with its own `mmap` and returns it at `free`, so each fresh activation of a
/// training step page-faults and is zeroed by the kernel again: a quarter of an MoE layer's
/// time at ablation sizes. Blocks up to 32 MiB now come from the heap, and the heap is not
/// trimmed below 1 GiB of free memory; measured in README "CPU speed". A process-wide
/// setting, so programs call it once at their start (the CLI, the ablation studies, the
/// benchmarks); a library never does it behind its user's back.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only changes glibc's allocation policy; it is
    // safe to call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// A token id checked against the table size.
pub(crate) fn checked_row(id: i64, rows: usize, what: &str) -> Result<usize> {
    usize::try_from(id)
        .ok()
        .filter(|&r| r < rows)
        .ok_or_else(|| Error::Input(format!("{what} {id} out of range for {rows} rows")))
}
