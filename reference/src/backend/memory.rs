//! Memory: the backend's tensor types and the copies between host and device.

use crate::error::Result;
use ndarray::{ArrayD, ArrayViewD};
use std::fmt::Debug;

family! {
    /// Where tensors live and how they get there and back.
    pub trait MemoryOps: Send + Sync + Sized + 'static {
        /// A dense floating-point tensor in row-major (standard) layout: f32 on every real
        /// backend; f64 only in [`CpuBackendF64`](type@super::CpuBackendF64), which runs the same code for the
        /// finite-difference gradient checks.
        type Tensor: Clone + Send + Sync + Debug;
        /// A dense tensor of integer indices (tokens, experts, rows).
        type Indices: Clone + Send + Sync + Debug;

        fn name(&self) -> &'static str;
        /// How many independent operations the host may usefully issue at once: the model
        /// runs its experts side by side when this exceeds 1. Default 1 (a device with one
        /// stream); the CPU: rayon's threads.
        fn host_threads(&self) -> usize {
            1
        }
        fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<Self::Tensor>;
        fn download(&self, t: &Self::Tensor) -> Result<ArrayD<f32>>;
        fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<Self::Indices>;
        fn download_indices(&self, t: &Self::Indices) -> Result<ArrayD<i64>>;
        fn shape(&self, t: &Self::Tensor) -> Vec<usize>;
        /// The shape of an index tensor, without copying it off the device.
        fn indices_shape(&self, t: &Self::Indices) -> Vec<usize>;
        fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;
        /// The tensor widened to f64 (exact for f32 backends): host-side statistics (losses,
        /// balance terms) are computed from it in f64.
        fn download_f64(&self, t: &Self::Tensor) -> Result<ArrayD<f64>>;
        /// A host f64 array in the backend's precision.
        fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<Self::Tensor>;
    }
}
