//! Layout on the CPU: every result an owned, row-major array.

use super::{shape_err, Cpu, CpuFloat};
use crate::backend::LayoutOps;
use crate::error::Result;
use ndarray::{ArrayD, Axis, IxDyn};

impl<F: CpuFloat> LayoutOps for Cpu<F> {
    fn reshape(&self, t: &ArrayD<F>, shape: &[usize]) -> Result<ArrayD<F>> {
        t.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(shape))
            .map_err(|_| shape_err("reshape", format!("{:?} into {:?}", t.shape(), shape)))
    }
    fn permute(&self, t: &ArrayD<F>, axes: &[usize]) -> Result<ArrayD<F>> {
        if axes.len() != t.ndim() {
            return Err(shape_err("permute", format!("{axes:?} for rank {}", t.ndim())));
        }
        Ok(t.view().permuted_axes(IxDyn(axes)).as_standard_layout().into_owned())
    }
    fn narrow(&self, t: &ArrayD<F>, axis: usize, start: usize, len: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() || start + len > t.shape()[axis] {
            return Err(shape_err("narrow", format!("{start}..{} of axis {axis} in {:?}", start + len, t.shape())));
        }
        Ok(t.slice_axis(Axis(axis), (start..start + len).into()).as_standard_layout().into_owned())
    }
    /// Row-major join: for each index of the axes before `axis`, the parts' contiguous
    /// blocks one after the other (plain copies; `ndarray::concatenate` walks dynamic-rank
    /// indices element by element).
    fn concat(&self, parts: &[&ArrayD<F>], axis: usize) -> Result<ArrayD<F>> {
        let first = parts.first().ok_or_else(|| shape_err("concat", "no parts"))?;
        let fits = |p: &ArrayD<F>| {
            p.ndim() == first.ndim() && (0..p.ndim()).all(|a| a == axis || p.shape()[a] == first.shape()[a])
        };
        if axis >= first.ndim() || !parts.iter().all(|p| fits(p)) {
            let shapes: Vec<_> = parts.iter().map(|p| p.shape().to_vec()).collect();
            return Err(shape_err("concat", format!("{shapes:?} along axis {axis}")));
        }
        let outer: usize = first.shape()[..axis].iter().product();
        let mut shape = first.shape().to_vec();
        shape[axis] = parts.iter().map(|p| p.shape()[axis]).sum();
        let blocks: Vec<_> = parts.iter().map(|p| p.as_standard_layout()).collect();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for block in &blocks {
                let width = block.len() / outer.max(1);
                data.extend_from_slice(&block.as_slice().expect("standard layout")[o * width..(o + 1) * width]);
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), data).expect("sizes add up"))
    }
    fn expand(&self, t: &ArrayD<F>, axis: usize, n: usize) -> Result<ArrayD<F>> {
        if t.shape().get(axis) != Some(&1) {
            return Err(shape_err("expand", format!("axis {axis} of {:?} is not 1", t.shape())));
        }
        let mut shape = t.shape().to_vec();
        shape[axis] = n;
        let view = t.broadcast(IxDyn(&shape)).ok_or_else(|| shape_err("expand", format!("{:?}", t.shape())))?;
        Ok(view.as_standard_layout().into_owned())
    }
    fn write_at(&self, dst: &mut ArrayD<F>, src: &ArrayD<F>, axis: usize, start: usize) -> Result<()> {
        let len = src.shape().get(axis).copied().unwrap_or(0);
        if axis >= dst.ndim() || start + len > dst.shape()[axis] {
            return Err(shape_err("write_at", format!("{start}..{} of axis {axis} in {:?}", start + len, dst.shape())));
        }
        let mut target = dst.slice_axis_mut(Axis(axis), (start..start + len).into());
        if target.shape() != src.shape() {
            return Err(shape_err("write_at", format!("{:?} into {:?}", src.shape(), target.shape())));
        }
        target.assign(src);
        Ok(())
    }
}
