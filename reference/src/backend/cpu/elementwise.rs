//! Element-wise arithmetic on the CPU (ndarray's broadcasting operators).

use super::{shape_err, Cpu, CpuFloat};
use crate::backend::ElementwiseOps;
use crate::error::Result;
use ndarray::{ArrayD, Axis};

impl<F: CpuFloat> ElementwiseOps for Cpu<F> {
    fn add(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape())))?;
        Ok(a + &b)
    }
    fn mul(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape())))?;
        Ok(a * &b)
    }
    fn scale(&self, a: &ArrayD<F>, s: f32) -> Result<ArrayD<F>> {
        Ok(a * F::of_f32(s))
    }
    fn sum_axis(&self, t: &ArrayD<F>, axis: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() {
            return Err(shape_err("sum_axis", format!("axis {axis} of {:?}", t.shape())));
        }
        Ok(t.sum_axis(Axis(axis)).insert_axis(Axis(axis)))
    }
}
