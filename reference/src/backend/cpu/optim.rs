//! AdamW and the squared norm on the CPU (the optimizer's owner is `train::optim`).

use super::{shape_err, Cpu, CpuFloat};
use crate::backend::{AdamWStep, OptimOps};
use crate::error::Result;
use ndarray::{ArrayD, Zip};
use rayon::prelude::*;

impl<F: CpuFloat> OptimOps for Cpu<F> {
    /// One AdamW update in place, as `torch.optim.AdamW`'s single-tensor path (see
    /// [`OptimOps::adamw_step`]); scalars are formed in f64 ([`AdamWStep::coefficients`]),
    /// then cast to `F`.
    fn adamw_step(
        &self,
        param: &mut ArrayD<F>,
        m: &mut ArrayD<F>,
        v: &mut ArrayD<F>,
        grad: &ArrayD<F>,
        h: &AdamWStep,
    ) -> Result<()> {
        if param.shape() != grad.shape() || m.shape() != grad.shape() || v.shape() != grad.shape() {
            return Err(shape_err(
                "adamw_step",
                format!("param {:?}, m {:?}, v {:?}, grad {:?}", param.shape(), m.shape(), v.shape(), grad.shape()),
            ));
        }
        let c = h.coefficients();
        let (decay, step_size, bc2_sqrt) = (F::of_f64(c.decay), F::of_f64(c.step_size), F::of_f64(c.bc2_sqrt));
        let (w1, b2f, w2) = (F::of_f64(c.one_minus_beta1), F::of_f32(h.beta2), F::of_f64(c.one_minus_beta2));
        let (scale, eps) = (F::of_f32(h.grad_scale), F::of_f32(h.eps));
        Zip::from(param).and(m).and(v).and(grad).par_for_each(|p, m, v, &g| {
            let g = g * scale;
            *p *= decay;
            *m += w1 * (g - *m);
            *v = *v * b2f + w2 * g * g;
            *p += -step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        });
        Ok(())
    }
    /// A fixed summation order keeps training bit-reproducible: in f64, over fixed chunks of
    /// [`super::PARALLEL_ELEMENTS`] summed side by side, then the chunks' sums in order, so
    /// any number of threads gives the same value.
    fn sum_squares(&self, t: &ArrayD<F>) -> Result<f64> {
        let t = t.as_standard_layout();
        let values = t.as_slice().expect("standard layout");
        let chunk_sum = |c: &[F]| c.iter().map(|&x| x.as_f64() * x.as_f64()).sum::<f64>();
        let sums: Vec<f64> = if super::parallel(values.len()) {
            values.par_chunks(super::PARALLEL_ELEMENTS).map(chunk_sum).collect()
        } else {
            values.chunks(super::PARALLEL_ELEMENTS).map(chunk_sum).collect()
        };
        Ok(sums.iter().sum())
    }
}
