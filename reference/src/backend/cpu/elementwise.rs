//! Element-wise arithmetic on the CPU: ndarray's `Zip` over the broadcast operands, split
//! across threads on large tensors ([`zip!`]).

use super::{shape_err, zip, Cpu, CpuFloat};
use crate::backend::ElementwiseOps;
use crate::error::Result;
use ndarray::{ArrayD, Axis, Zip};

impl<F: CpuFloat> ElementwiseOps for Cpu<F> {
    fn add(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape())))?;
        Ok(zip!(a.len(), Zip::from(a).and(&b), map_collect(|&x, &y| x + y)))
    }
    fn mul(&self, a: &ArrayD<F>, b: &ArrayD<F>) -> Result<ArrayD<F>> {
        let b =
            b.broadcast(a.raw_dim()).ok_or_else(|| shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape())))?;
        Ok(zip!(a.len(), Zip::from(a).and(&b), map_collect(|&x, &y| x * y)))
    }
    fn scale(&self, a: &ArrayD<F>, s: f32) -> Result<ArrayD<F>> {
        let s = F::of_f32(s);
        Ok(zip!(a.len(), Zip::from(a), map_collect(|&x| x * s)))
    }
    fn sum_axis(&self, t: &ArrayD<F>, axis: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() {
            return Err(shape_err("sum_axis", format!("axis {axis} of {:?}", t.shape())));
        }
        // Each lane along `axis` summed in index order by one thread.
        let lanes = Zip::from(t.lanes(Axis(axis)));
        let out = zip!(
            t.len(),
            lanes,
            map_collect(|lane: ndarray::ArrayView1<'_, F>| lane.iter().fold(F::zero(), |s, &x| s + x))
        );
        Ok(out.insert_axis(Axis(axis)))
    }
}
