//! Layout on the CPU: every result an owned, row-major array, copied by all threads when
//! it is large ([`standard_copy`]: a single-threaded copy leaves the other threads idle).

use super::{shape_err, zip, Cpu, CpuFloat};
use crate::backend::LayoutOps;
use crate::error::Result;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};
use rayon::prelude::*;

/// `view` as a new row-major array, each element copied as it is; split across the
/// threads above [`super::PARALLEL_ELEMENTS`].
pub(crate) fn standard_copy<F: CpuFloat>(view: ArrayViewD<'_, F>) -> ArrayD<F> {
    standard_map(view, |x| x)
}

/// `f` of each element of `view`, as a new row-major array; split across the threads above
/// [`super::PARALLEL_ELEMENTS`] (each element by itself, so the same values either way).
pub(crate) fn standard_map<A: Copy + Sync, B: Send>(
    view: ArrayViewD<'_, A>,
    f: impl Fn(A) -> B + Sync + Send,
) -> ArrayD<B> {
    let mut out = ArrayD::<B>::uninit(view.raw_dim());
    zip!(
        out.len(),
        Zip::from(&mut out).and(&view),
        for_each(|o: &mut std::mem::MaybeUninit<B>, &x: &A| {
            o.write(f(x));
        })
    );
    // SAFETY: `out` has `view`'s shape and the zip above wrote each of its elements.
    unsafe { out.assume_init() }
}

impl<F: CpuFloat> LayoutOps for Cpu<F> {
    fn reshape(&self, t: &ArrayD<F>, shape: &[usize]) -> Result<ArrayD<F>> {
        standard_copy(t.view())
            .into_shape_with_order(IxDyn(shape))
            .map_err(|_| shape_err("reshape", format!("{:?} into {:?}", t.shape(), shape)))
    }
    fn permute(&self, t: &ArrayD<F>, axes: &[usize]) -> Result<ArrayD<F>> {
        if axes.len() != t.ndim() {
            return Err(shape_err("permute", format!("{axes:?} for rank {}", t.ndim())));
        }
        Ok(standard_copy(t.view().permuted_axes(IxDyn(axes))))
    }
    fn narrow(&self, t: &ArrayD<F>, axis: usize, start: usize, len: usize) -> Result<ArrayD<F>> {
        if axis >= t.ndim() || start + len > t.shape()[axis] {
            return Err(shape_err("narrow", format!("{start}..{} of axis {axis} in {:?}", start + len, t.shape())));
        }
        Ok(standard_copy(t.slice_axis(Axis(axis), (start..start + len).into())))
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
        let mut out = ArrayD::<F>::uninit(IxDyn(&shape));
        let total = out.len();
        // The output in order, as (destination, source) pieces: for each outer index, each
        // part's contiguous block.
        let mut rest = out.as_slice_mut().expect("fresh row-major array");
        let mut pieces = Vec::with_capacity(outer * blocks.len());
        for o in 0..outer {
            for block in &blocks {
                let width = block.len() / outer.max(1);
                let (dst, tail) = std::mem::take(&mut rest).split_at_mut(width);
                pieces.push((dst, &block.as_slice().expect("standard layout")[o * width..(o + 1) * width]));
                rest = tail;
            }
        }
        let copy = |(dst, src): (&mut [std::mem::MaybeUninit<F>], &[F])| {
            for (d, &x) in dst.iter_mut().zip(src) {
                d.write(x);
            }
        };
        if super::parallel(total) {
            // Enough pieces per task that each copies about PARALLEL_ELEMENTS values.
            let per_task = (super::PARALLEL_ELEMENTS * pieces.len() / total).max(1);
            pieces.into_par_iter().with_min_len(per_task).for_each(copy);
        } else {
            pieces.into_iter().for_each(copy);
        }
        // SAFETY: the pieces tile the whole output (the part widths add up to its shape).
        Ok(unsafe { out.assume_init() })
    }
    fn expand(&self, t: &ArrayD<F>, axis: usize, n: usize) -> Result<ArrayD<F>> {
        if t.shape().get(axis) != Some(&1) {
            return Err(shape_err("expand", format!("axis {axis} of {:?} is not 1", t.shape())));
        }
        let mut shape = t.shape().to_vec();
        shape[axis] = n;
        let view = t.broadcast(IxDyn(&shape)).ok_or_else(|| shape_err("expand", format!("{:?}", t.shape())))?;
        Ok(standard_copy(view))
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

#[cfg(test)]
mod tests {
    use crate::backend::LayoutOps;
    use crate::CpuBackend as B;
    use ndarray::{concatenate, ArrayD, Axis, Dimension, IxDyn};

    fn ramp(shape: &[usize], offset: f32) -> ArrayD<f32> {
        ArrayD::from_shape_fn(IxDyn(shape), |i| i.as_array_view().iter().fold(offset, |a, &x| a * 31.0 + x as f32))
    }

    /// The threaded copies give what ndarray's own do, on both sides of the parallel
    /// threshold, along every axis, with empty parts and from transposed views.
    #[test]
    fn threaded_copies_are_ndarrays_own() {
        for (rows, cols) in [(3, 5), (700, 130)] {
            let parts = [ramp(&[rows, cols], 1.0), ramp(&[rows, 0], 2.0), ramp(&[rows, 7], 3.0)];
            for axis in [0, 1] {
                let parts: Vec<ArrayD<f32>> = if axis == 0 {
                    parts.iter().map(|p| p.t().as_standard_layout().into_owned()).collect()
                } else {
                    parts.to_vec()
                };
                let refs: Vec<&ArrayD<f32>> = parts.iter().collect();
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                assert_eq!(B.concat(&refs, axis).unwrap(), concatenate(Axis(axis), &views).unwrap(), "axis {axis}");
            }
            let x = ramp(&[rows, cols], 0.5);
            let t = x.t().to_owned(); // a column-major array
            let flat = B.reshape(&t, &[rows * cols]).unwrap();
            assert_eq!(flat.as_slice().unwrap(), x.t().iter().copied().collect::<Vec<_>>().as_slice());
            assert_eq!(B.narrow(&x, 1, 1, cols - 2).unwrap(), x.slice_axis(Axis(1), (1..cols - 1).into()));
            assert_eq!(B.permute(&x, &[1, 0]).unwrap(), x.t());
            assert!(B.permute(&x, &[1, 0]).unwrap().is_standard_layout());
        }
    }
}
