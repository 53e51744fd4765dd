//! [`OptimOps`]: AdamW and the sums of squares of global-norm clipping (`kernels/optim.cu`).

use crate::device::{err, CudaBackend, CudaTensor};
use crate::kernels::{elementwise_cfg, Module};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use v3lab_reference::backend::{AdamWStep, OptimOps};
use v3lab_reference::{Error, Result};

/// `SUMSQ_THREADS` of `kernels/optim.cu`, and at most this many partial sums per tensor.
const SUMSQ_THREADS: u32 = 256;
const SUMSQ_MAX_BLOCKS: usize = 1024;

impl OptimOps for CudaBackend {
    /// One AdamW update in place with the CPU reference's coefficients
    /// ([`AdamWStep::coefficients`], rounded to f32), applied in the CPU's order with every
    /// operation rounded (see `kernels/optim.cu`).
    fn adamw_step(
        &self,
        param: &mut CudaTensor,
        m: &mut CudaTensor,
        v: &mut CudaTensor,
        grad: &CudaTensor,
        h: &AdamWStep,
    ) -> Result<()> {
        if param.shape != grad.shape || m.shape != grad.shape || v.shape != grad.shape {
            return Err(Error::shape(
                "adamw_step",
                format!("param {:?}, m {:?}, v {:?}, grad {:?}", param.shape, m.shape, v.shape, grad.shape),
            ));
        }
        let n = grad.len();
        if n == 0 {
            return Ok(());
        }
        let c = h.coefficients();
        let scalars = [
            c.decay as f32,
            c.step_size as f32,
            c.bc2_sqrt as f32,
            c.one_minus_beta1 as f32,
            h.beta2,
            c.one_minus_beta2 as f32,
            h.grad_scale,
            h.eps,
        ];
        let f = self.func(Module::Optim, "adamw_step_f32")?;
        let n64 = n as i64;
        let (p_buf, m_buf, v_buf) = (self.unique(param)?, self.unique(m)?, self.unique(v)?);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(p_buf).arg(m_buf).arg(v_buf).arg(&*grad.data).arg(&n64);
        for s in &scalars {
            launch.arg(s);
        }
        // SAFETY: n elements in each of the four buffers (shapes checked).
        unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        Ok(())
    }

    /// Σ x² in f64: per-block partials on the device, added on the host in block order.
    fn sum_squares(&self, t: &CudaTensor) -> Result<f64> {
        let n = t.len();
        if n == 0 {
            return Ok(0.0);
        }
        let blocks = n.div_ceil(SUMSQ_THREADS as usize).min(SUMSQ_MAX_BLOCKS);
        // SAFETY: every block writes its partial.
        let mut partials = unsafe { self.stream.alloc::<f64>(blocks) }.map_err(err)?;
        let f = self.func(Module::Optim, "sum_squares_f32")?;
        let n64 = n as i64;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&mut partials).arg(&*t.data).arg(&n64);
        let cfg =
            LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (SUMSQ_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: n elements in t, `blocks` partials.
        unsafe { launch.launch(cfg) }.map_err(err)?;
        self.check_error_word()?;
        let host = self.stream.clone_dtoh(&partials).map_err(err)?;
        Ok(host.iter().sum())
    }
}
