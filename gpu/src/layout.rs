//! [`LayoutOps`]: reshape (no copy), permute, narrow, concat, expand and write_at, all
//! through one strided-copy kernel (`kernels/strided_copy.cu`).

use crate::device::{err, CudaBackend, CudaTensor};
use crate::kernels::{elementwise_cfg, Module};
use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use v3lab_reference::backend::LayoutOps;
use v3lab_reference::{Error, Result};

pub(crate) const MAX_RANK: usize = 8;

/// `kernels/strided_copy.cu`'s `StridedMeta`, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct StridedMeta {
    rank: i32,
    shape: [i64; MAX_RANK],
    src_stride: [i64; MAX_RANK],
    dst_stride: [i64; MAX_RANK],
    src_off: i64,
    dst_off: i64,
    n: i64,
}
// SAFETY: plain repr(C) data, the layout of the C struct.
unsafe impl DeviceRepr for StridedMeta {}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub(crate) fn fixed(v: &[usize], op: &'static str) -> Result<[i64; MAX_RANK]> {
    if v.len() > MAX_RANK {
        return Err(Error::shape(op, format!("rank {} > {MAX_RANK}", v.len())));
    }
    let mut out = [0i64; MAX_RANK];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as i64;
    }
    Ok(out)
}

fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::shape(op, msg)
}

impl CudaBackend {
    /// The one copy kernel: `dst[dst_off + Σ i·dst_stride] = src[src_off + Σ i·src_stride]`.
    #[allow(clippy::too_many_arguments)]
    fn strided_copy(
        &self,
        dst: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        shape: &[usize],
        src_stride: &[usize],
        dst_stride: &[usize],
        src_off: usize,
        dst_off: usize,
        op: &'static str,
    ) -> Result<()> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(());
        }
        let meta = StridedMeta {
            rank: shape.len() as i32,
            shape: fixed(shape, op)?,
            src_stride: fixed(src_stride, op)?,
            dst_stride: fixed(dst_stride, op)?,
            src_off: src_off as i64,
            dst_off: dst_off as i64,
            n: n as i64,
        };
        let f = self.func(Module::StridedCopy, "strided_copy_f32")?;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(dst).arg(src).arg(&meta);
        // SAFETY: the host checked every index the meta can produce against both buffers.
        unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        Ok(())
    }
}

impl LayoutOps for CudaBackend {
    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(shape_err("reshape", format!("{:?} into {shape:?}", t.shape)));
        }
        Ok(CudaTensor { data: t.data.clone(), shape: shape.to_vec() })
    }

    fn permute(&self, t: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
        let rank = t.shape.len();
        let mut seen = vec![false; rank];
        if axes.len() != rank || axes.iter().any(|&a| a >= rank || std::mem::replace(&mut seen[a], true)) {
            return Err(shape_err("permute", format!("{axes:?} for rank {rank}")));
        }
        let in_strides = strides(&t.shape);
        let shape: Vec<usize> = axes.iter().map(|&a| t.shape[a]).collect();
        let src_stride: Vec<usize> = axes.iter().map(|&a| in_strides[a]).collect();
        let mut out = self.alloc(t.len())?;
        self.strided_copy(&mut out, &t.data, &shape, &src_stride, &strides(&shape), 0, 0, "permute")?;
        Ok(self.tensor(out, shape))
    }

    fn narrow(&self, t: &CudaTensor, axis: usize, start: usize, len: usize) -> Result<CudaTensor> {
        if axis >= t.shape.len() || start + len > t.shape[axis] {
            return Err(shape_err("narrow", format!("{start}..{} of axis {axis} in {:?}", start + len, t.shape)));
        }
        let in_strides = strides(&t.shape);
        let mut shape = t.shape.clone();
        shape[axis] = len;
        let mut out = self.alloc(shape.iter().product())?;
        let off = start * in_strides[axis];
        self.strided_copy(&mut out, &t.data, &shape, &in_strides, &strides(&shape), off, 0, "narrow")?;
        Ok(self.tensor(out, shape))
    }

    fn concat(&self, parts: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
        let first = parts.first().ok_or_else(|| shape_err("concat", "no parts"))?;
        let rank = first.shape.len();
        let fits =
            |p: &&CudaTensor| p.shape.len() == rank && (0..rank).all(|i| i == axis || p.shape[i] == first.shape[i]);
        if axis >= rank || !parts.iter().all(fits) {
            let shapes: Vec<_> = parts.iter().map(|p| p.shape.clone()).collect();
            return Err(shape_err("concat", format!("{shapes:?} along axis {axis}")));
        }
        let mut shape = first.shape.clone();
        shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
        let out_strides = strides(&shape);
        let mut out = self.alloc(shape.iter().product())?;
        let mut at = 0;
        for p in parts {
            let off = at * out_strides[axis];
            self.strided_copy(&mut out, &p.data, &p.shape, &strides(&p.shape), &out_strides, 0, off, "concat")?;
            at += p.shape[axis];
        }
        Ok(self.tensor(out, shape))
    }

    fn expand(&self, t: &CudaTensor, axis: usize, n: usize) -> Result<CudaTensor> {
        if t.shape.get(axis) != Some(&1) {
            return Err(shape_err("expand", format!("axis {axis} of {:?} is not 1", t.shape)));
        }
        let mut src_stride = strides(&t.shape);
        src_stride[axis] = 0;
        let mut shape = t.shape.clone();
        shape[axis] = n;
        let mut out = self.alloc(shape.iter().product())?;
        self.strided_copy(&mut out, &t.data, &shape, &src_stride, &strides(&shape), 0, 0, "expand")?;
        Ok(self.tensor(out, shape))
    }

    fn write_at(&self, dst: &mut CudaTensor, src: &CudaTensor, axis: usize, start: usize) -> Result<()> {
        let len = src.shape.get(axis).copied().unwrap_or(0);
        if axis >= dst.shape.len() || start + len > dst.shape[axis] {
            return Err(shape_err("write_at", format!("{start}..{} of axis {axis} in {:?}", start + len, dst.shape)));
        }
        let mut target = dst.shape.clone();
        target[axis] = len;
        if target != src.shape {
            return Err(shape_err("write_at", format!("{:?} into {target:?}", src.shape)));
        }
        let dst_strides = strides(&dst.shape);
        let buf = self.unique(dst)?;
        let off = start * dst_strides[axis];
        self.strided_copy(buf, &src.data, &src.shape, &strides(&src.shape), &dst_strides, 0, off, "write_at")
    }
}
