//! [`MemoryOps`]: the tensor types and the copies between host and device. The device
//! holds f32 only; the f64 transfers convert on the host. Every download reads the sticky
//! error word first (see `device.rs`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor, NAME};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::sync::Arc;
use v3lab_reference::backend::MemoryOps;
use v3lab_reference::Result;

impl MemoryOps for CudaBackend {
    type Tensor = CudaTensor;
    type Indices = CudaIndices;

    fn name(&self) -> &'static str {
        NAME
    }

    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<CudaTensor> {
        let host = host.as_standard_layout();
        let data = host.as_slice().expect("standard layout");
        let slice = if data.is_empty() { self.alloc(0)? } else { self.stream.clone_htod(data).map_err(err)? };
        Ok(self.tensor(slice, host.shape().to_vec()))
    }

    fn download(&self, t: &CudaTensor) -> Result<ArrayD<f32>> {
        self.check_error_word()?;
        let n = t.len();
        let data = if n == 0 { Vec::new() } else { self.stream.clone_dtoh(&t.data.slice(0..n)).map_err(err)? };
        Ok(ArrayD::from_shape_vec(IxDyn(&t.shape), data).expect("one value per element"))
    }

    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<CudaIndices> {
        let host = host.as_standard_layout();
        let data = host.as_slice().expect("standard layout");
        let slice = if data.is_empty() {
            // SAFETY: never read (the tensor has no elements).
            unsafe { self.stream.alloc::<i64>(1) }.map_err(err)?
        } else {
            self.stream.clone_htod(data).map_err(err)?
        };
        Ok(CudaIndices { data: Arc::new(slice), shape: host.shape().to_vec() })
    }

    fn download_indices(&self, t: &CudaIndices) -> Result<ArrayD<i64>> {
        self.check_error_word()?;
        let n: usize = t.shape.iter().product();
        let data = if n == 0 { Vec::new() } else { self.stream.clone_dtoh(&t.data.slice(0..n)).map_err(err)? };
        Ok(ArrayD::from_shape_vec(IxDyn(&t.shape), data).expect("one index per element"))
    }

    fn shape(&self, t: &CudaTensor) -> Vec<usize> {
        t.shape.clone()
    }

    fn indices_shape(&self, t: &CudaIndices) -> Vec<usize> {
        t.shape.clone()
    }

    fn zeros(&self, shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        let data = self.stream.alloc_zeros::<f32>(n.max(1)).map_err(err)?;
        Ok(self.tensor(data, shape.to_vec()))
    }

    fn download_f64(&self, t: &CudaTensor) -> Result<ArrayD<f64>> {
        Ok(self.download(t)?.mapv(f64::from))
    }

    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<CudaTensor> {
        self.upload(host.mapv(|x| x as f32).view())
    }
}
