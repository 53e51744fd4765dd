//! [`LossOps`]: the cross-entropy loss, forward and backward (`kernels/cross_entropy.cu`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor};
use crate::kernels::{elementwise_cfg, rows_cfg, Module};
use cudarc::driver::PushKernelArg;
use v3lab_reference::backend::{LossOps, MemoryOps};
use v3lab_reference::{Error, Result};

/// Threads per row of logits: a vocabulary of 32k is 128 steps of 256.
const CE_THREADS: u32 = 256;

fn rows_and_vocab(logits: &CudaTensor, targets: &CudaIndices, op: &'static str) -> Result<(usize, usize)> {
    match (logits.shape.as_slice(), targets.shape.iter().product::<usize>()) {
        (&[n, vocab], t) if t == n && n > 0 && vocab > 0 => Ok((n, vocab)),
        _ => Err(Error::shape(op, format!("logits {:?}, targets {:?}", logits.shape, targets.shape))),
    }
}

impl LossOps for CudaBackend {
    /// Per row on the device (log-sum-exp and the row's loss in f32); the N row losses are
    /// added on the host in f64 in row order, as the CPU reference adds them.
    fn cross_entropy_forward(&self, logits: &CudaTensor, targets: &CudaIndices) -> Result<(f64, CudaTensor)> {
        let (n, vocab) = rows_and_vocab(logits, targets, "cross_entropy_forward")?;
        let (mut lse, mut row_loss) = (self.alloc(n)?, self.alloc(n)?);
        {
            let f = self.func(Module::CrossEntropy, "cross_entropy_forward_f32")?;
            let v64 = vocab as i64;
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut lse).arg(&mut row_loss).arg(&*logits.data).arg(&*targets.data).arg(&v64).arg(&*word);
            // SAFETY: n rows of vocab logits, n targets (range-checked in the kernel).
            unsafe { launch.launch(rows_cfg(n, CE_THREADS)) }.map_err(err)?;
        }
        let row_loss = self.download(&self.tensor(row_loss, vec![n]))?;
        let total: f64 = row_loss.iter().map(|&l| f64::from(l)).sum();
        Ok((total / n as f64, self.tensor(lse, vec![n])))
    }

    fn cross_entropy_backward(
        &self,
        logits: &CudaTensor,
        lse: &CudaTensor,
        targets: &CudaIndices,
        dloss: f32,
    ) -> Result<CudaTensor> {
        let (n, vocab) = rows_and_vocab(logits, targets, "cross_entropy_backward")?;
        if lse.len() != n {
            return Err(Error::shape("cross_entropy_backward", format!("lse {:?} for {n} rows", lse.shape)));
        }
        // The CPU's c = dloss / N, in f32.
        let c = dloss / n as f32;
        let mut d = self.alloc(n * vocab)?;
        if vocab > 0 {
            let f = self.func(Module::CrossEntropy, "cross_entropy_backward_f32")?;
            let (n64, v64) = (n as i64, vocab as i64);
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut d).arg(&*logits.data).arg(&*lse.data).arg(&*targets.data);
            launch.arg(&n64).arg(&v64).arg(&c).arg(&*word);
            // SAFETY: n × vocab logits and outputs, n lse and targets (checked above).
            unsafe { launch.launch(elementwise_cfg(n * vocab)) }.map_err(err)?;
        }
        Ok(self.tensor(d, logits.shape.clone()))
    }
}
