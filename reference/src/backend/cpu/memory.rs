//! Memory on the CPU: tensors are `ndarray` arrays, so upload and download are copies
//! (or casts, for the f64 twin).

use super::layout::standard_map;
use super::{Cpu, CpuFloat};
use crate::backend::MemoryOps;
use crate::error::Result;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

impl<F: CpuFloat> MemoryOps for Cpu<F> {
    type Tensor = ArrayD<F>;
    type Indices = ArrayD<i64>;

    fn name(&self) -> &'static str {
        if std::mem::size_of::<F>() == 8 {
            "cpu-f64"
        } else {
            "cpu"
        }
    }
    fn host_threads(&self) -> usize {
        rayon::current_num_threads()
    }
    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<ArrayD<F>> {
        Ok(standard_map(host, F::of_f32))
    }
    fn download(&self, t: &ArrayD<F>) -> Result<ArrayD<f32>> {
        Ok(standard_map(t.view(), F::as_f32))
    }
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<ArrayD<i64>> {
        Ok(host.as_standard_layout().into_owned())
    }
    fn download_indices(&self, t: &ArrayD<i64>) -> Result<ArrayD<i64>> {
        Ok(t.clone())
    }
    fn indices_shape(&self, t: &ArrayD<i64>) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn shape(&self, t: &ArrayD<F>) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn zeros(&self, shape: &[usize]) -> Result<ArrayD<F>> {
        Ok(ArrayD::zeros(IxDyn(shape)))
    }
    fn download_f64(&self, t: &ArrayD<F>) -> Result<ArrayD<f64>> {
        Ok(standard_map(t.view(), F::as_f64))
    }
    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<ArrayD<F>> {
        Ok(standard_map(host, F::of_f64))
    }
}
