//! The backend itself: one CUDA context (device 0's primary context), one stream, one
//! cuBLAS handle, and device tensors.
//!
//! Tensors are values, as on the CPU backend: a [`CudaTensor`] shares its buffer through
//! an `Arc`, so `clone` and `reshape` copy nothing; the only in-place operation,
//! `write_at`, copies the buffer first when another tensor still shares it.
//!
//! Failure modes: every driver, NVRTC and cuBLAS error becomes `Error::Backend`. Kernels
//! that meet a bad index (token id, row, expert) skip it and set a bit in a sticky device
//! error word; every download reads the word and fails, naming the operation, so a bad
//! index surfaces at the next point where the host sees data.

use crate::kernels::{self, Kernels};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, PushKernelArg};
use std::sync::{Arc, Mutex};
use v3lab_reference::{Error, Result};

pub(crate) const NAME: &str = "cuda";

pub(crate) fn err(msg: impl std::fmt::Display) -> Error {
    Error::Backend { backend: NAME, msg: msg.to_string() }
}

/// A dense row-major f32 tensor in device memory.
#[derive(Clone)]
pub struct CudaTensor {
    pub(crate) data: Arc<CudaSlice<f32>>,
    pub(crate) shape: Vec<usize>,
}

/// A dense tensor of i64 indices in device memory.
#[derive(Clone)]
pub struct CudaIndices {
    pub(crate) data: Arc<CudaSlice<i64>>,
    pub(crate) shape: Vec<usize>,
}

impl std::fmt::Debug for CudaTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaTensor{:?}", self.shape)
    }
}
impl std::fmt::Debug for CudaIndices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaIndices{:?}", self.shape)
    }
}

impl CudaTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the bits of the device error word mean (`kernels/common.cuh`).
const ERROR_BITS: [(u32, &str); 5] = [
    (1, "embedding_forward: token id outside the vocabulary"),
    (2, "gather_rows: row index out of range"),
    (4, "scatter_add_rows: row index out of range"),
    (8, "expert_dispatch or route_backward: expert index out of range"),
    (16, "cross_entropy: target outside the vocabulary"),
];

/// The CUDA implementation of [`v3lab_reference::Backend`].
pub struct CudaBackend {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) kernels: Kernels,
    /// Sticky error word written by kernels with `atomicOr` (see the module doc); the
    /// lock is taken to pass it to a kernel and to read and clear it.
    pub(crate) error_word: Mutex<CudaSlice<u32>>,
    device_name: String,
    compute_capability: (i32, i32),
}

/// Checks that the libraries are there before cudarc touches them: cudarc's dynamic
/// loading panics when a library or a symbol is missing.
fn probe_libraries() -> Result<()> {
    // SAFETY: these only try to dlopen the library names; nothing is called.
    let present = unsafe {
        [
            ("the CUDA driver (libcuda)", cudarc::driver::sys::is_culib_present()),
            ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
            ("cuBLAS (libcublas)", cudarc::cublas::sys::is_culib_present()),
        ]
    };
    match present.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(err(format!("{what} not found"))),
        None => Ok(()),
    }
}

impl CudaBackend {
    /// Opens device 0. Fails, without panicking, where there is no driver, no device, or
    /// a library is missing.
    pub fn new() -> Result<Self> {
        probe_libraries()?;
        // A panic inside cudarc (a symbol missing from an older library) becomes an error.
        std::panic::catch_unwind(Self::open).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic while opening the device".into());
            Err(err(msg))
        })
    }

    fn open() -> Result<Self> {
        let count = CudaContext::device_count().map_err(|e| err(format!("cuInit / device count: {e}")))?;
        if count < 1 {
            return Err(err("the driver reports no CUDA device"));
        }
        let ctx = CudaContext::new(0).map_err(|e| err(format!("opening device 0: {e}")))?;
        // SAFETY: one stream only, so cudarc's cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| err(format!("cuBLAS handle: {e}")))?;
        // Full f32 products: the default math mode never uses TF32 for f32 GEMMs (only
        // CUBLAS_TF32_TENSOR_OP_MATH or NVIDIA_TF32_OVERRIDE=1 would); set it explicitly.
        // SAFETY: a valid handle.
        unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                *blas.handle(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        }
        .result()
        .map_err(|e| err(format!("cublasSetMathMode: {e}")))?;
        let compute_capability = ctx.compute_capability().map_err(err)?;
        let device_name = ctx.name().map_err(err)?;
        let error_word = stream.alloc_zeros::<u32>(1).map_err(err)?;
        Ok(CudaBackend {
            kernels: Kernels::new(compute_capability),
            ctx,
            stream,
            blas,
            error_word: Mutex::new(error_word),
            device_name,
            compute_capability,
        })
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Whether the "device" is v3lab's CUDA emulator (`gpu/emu/`), which runs the kernels
    /// on the CPU to check them: its results are checks of logic, never of the hardware's
    /// numerics, and its timings mean nothing.
    pub fn is_emulator(&self) -> bool {
        self.device_name.starts_with("v3lab CUDA emulator")
    }

    /// (major, minor); (9, 0) on Hopper.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Waits for every queued operation (benchmarks time with this).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(err)
    }

    /// A plain device-to-device copy (`cuMemcpyDtoDAsync`): the bandwidth yardstick of
    /// the benchmarks.
    pub fn device_copy(&self, t: &CudaTensor) -> Result<CudaTensor> {
        let copy = self.stream.clone_dtod(&*t.data).map_err(err)?;
        Ok(self.tensor(copy, t.shape.clone()))
    }

    /// Reads and clears the sticky error word; an error names every operation that met a
    /// bad index since the last check.
    pub(crate) fn check_error_word(&self) -> Result<()> {
        let mut slot = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
        let word = self.stream.clone_dtoh(&*slot).map_err(err)?[0];
        if word == 0 {
            return Ok(());
        }
        self.stream.memset_zeros(&mut *slot).map_err(err)?;
        let what: Vec<&str> = ERROR_BITS.iter().filter(|(bit, _)| word & bit != 0).map(|(_, s)| *s).collect();
        Err(Error::Input(format!("on the GPU: {}", what.join("; "))))
    }

    /// An uninitialised f32 buffer of `n` elements (n may be 0).
    pub(crate) fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: every caller writes all n elements before anyone reads them.
        unsafe { self.stream.alloc::<f32>(n.max(1)) }.map_err(err)
    }

    /// The tensor's buffer for an in-place update. Tensors are values: a buffer another
    /// tensor still shares is copied first.
    pub(crate) fn unique<'t>(&self, t: &'t mut CudaTensor) -> Result<&'t mut CudaSlice<f32>> {
        if Arc::get_mut(&mut t.data).is_none() {
            let copy = self.stream.clone_dtod(&*t.data).map_err(err)?;
            t.data = Arc::new(copy);
        }
        Ok(Arc::get_mut(&mut t.data).expect("unique after the copy"))
    }

    pub(crate) fn tensor(&self, data: CudaSlice<f32>, shape: Vec<usize>) -> CudaTensor {
        CudaTensor { data: Arc::new(data), shape }
    }

    pub(crate) fn func(&self, module: kernels::Module, name: &'static str) -> Result<cudarc::driver::CudaFunction> {
        self.kernels.function(&self.ctx, module, name)
    }

    /// Launches a row kernel `kernel(out, src, rows, n_rows, d, error_word)`: one block per
    /// index of `rows`, moving a row of width `d` between `src` and `out`, an index outside
    /// `0..n_rows` flagged in the error word (embedding, gather, scatter-add).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_rows(
        &self,
        module: kernels::Module,
        kernel: &'static str,
        out: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        rows: &CudaIndices,
        n_rows: usize,
        d: usize,
    ) -> Result<()> {
        let m: usize = rows.shape.iter().product();
        if m == 0 || d == 0 {
            return Ok(());
        }
        let f = self.func(module, kernel)?;
        let (n64, d64) = (n_rows as i64, d as i64);
        let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(out).arg(src).arg(&*rows.data).arg(&n64).arg(&d64).arg(&*word);
        // SAFETY: the kernel range-checks each index against n_rows; m rows of d elements on
        // the indexed side, the callers size `out` and `src` for them.
        unsafe { launch.launch(kernels::rows_cfg(m, kernels::ROW_THREADS)) }.map_err(err)?;
        Ok(())
    }
}
