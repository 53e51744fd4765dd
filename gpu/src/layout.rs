//! Memory and layout: upload/download, reshape (no copy), permute, narrow, concat,
//! expand, write_at, all through one strided-copy kernel; and the broadcasting
//! elementwise ops (`kernels/strided_copy.cu`, `kernels/elementwise.cu`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor};
use crate::kernels::{elementwise_cfg, Module};
use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::sync::Arc;
use v3lab_reference::{Error, Result};

const MAX_RANK: usize = 8;
/// Terms one thread of `sum_axis_f32` adds before the partial sums are summed again: 64
/// keeps every sum over K experts (≤ 64) in the CPU's order, bit for bit.
const SUM_CHUNK: usize = 64;

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

/// `kernels/elementwise.cu`'s `BroadcastMeta`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BroadcastMeta {
    rank: i32,
    shape: [i64; MAX_RANK],
    b_stride: [i64; MAX_RANK],
    n: i64,
    same_shape: i32,
}
// SAFETY: plain repr(C) data, the layout of the C struct.
unsafe impl DeviceRepr for BroadcastMeta {}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn fixed(v: &[usize], op: &'static str) -> Result<[i64; MAX_RANK]> {
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
    pub(crate) fn upload_f32(&self, host: ArrayViewD<'_, f32>) -> Result<CudaTensor> {
        let host = host.as_standard_layout();
        let data = host.as_slice().expect("standard layout");
        let slice = if data.is_empty() { self.alloc(0)? } else { self.stream.clone_htod(data).map_err(err)? };
        Ok(self.tensor(slice, host.shape().to_vec()))
    }

    pub(crate) fn download_f32(&self, t: &CudaTensor) -> Result<ArrayD<f32>> {
        self.check_error_word()?;
        let n = t.len();
        let data = if n == 0 { Vec::new() } else { self.stream.clone_dtoh(&t.data.slice(0..n)).map_err(err)? };
        Ok(ArrayD::from_shape_vec(IxDyn(&t.shape), data).expect("one value per element"))
    }

    pub(crate) fn upload_i64(&self, host: ArrayViewD<'_, i64>) -> Result<CudaIndices> {
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

    pub(crate) fn download_i64(&self, t: &CudaIndices) -> Result<ArrayD<i64>> {
        self.check_error_word()?;
        let n: usize = t.shape.iter().product();
        let data = if n == 0 { Vec::new() } else { self.stream.clone_dtoh(&t.data.slice(0..n)).map_err(err)? };
        Ok(ArrayD::from_shape_vec(IxDyn(&t.shape), data).expect("one index per element"))
    }

    pub(crate) fn zeros_f32(&self, shape: &[usize]) -> Result<CudaTensor> {
        let n: usize = shape.iter().product();
        let data = self.stream.alloc_zeros::<f32>(n.max(1)).map_err(err)?;
        Ok(self.tensor(data, shape.to_vec()))
    }

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

    pub(crate) fn reshape_f32(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(shape_err("reshape", format!("{:?} into {shape:?}", t.shape)));
        }
        Ok(CudaTensor { data: t.data.clone(), shape: shape.to_vec() })
    }

    pub(crate) fn permute_f32(&self, t: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
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

    pub(crate) fn narrow_f32(&self, t: &CudaTensor, axis: usize, start: usize, len: usize) -> Result<CudaTensor> {
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

    pub(crate) fn concat_f32(&self, parts: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
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

    pub(crate) fn expand_f32(&self, t: &CudaTensor, axis: usize, n: usize) -> Result<CudaTensor> {
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

    pub(crate) fn write_at_f32(&self, dst: &mut CudaTensor, src: &CudaTensor, axis: usize, start: usize) -> Result<()> {
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

    /// `a ∘ b` with `b` broadcast to `a`'s shape (numpy rules, as the CPU backend).
    pub(crate) fn binary_f32(&self, a: &CudaTensor, b: &CudaTensor, kernel: &'static str) -> Result<CudaTensor> {
        let op = if kernel == "add_f32" { "add" } else { "mul" };
        let (ra, rb) = (a.shape.len(), b.shape.len());
        let bad = || shape_err(op, format!("{:?} and {:?}", a.shape, b.shape));
        if rb > ra {
            return Err(bad());
        }
        let b_strides = strides(&b.shape);
        let mut b_stride = vec![0usize; ra];
        for i in 0..rb {
            let (da, db) = (a.shape[ra - rb + i], b.shape[i]);
            if db != da && db != 1 {
                return Err(bad());
            }
            b_stride[ra - rb + i] = if db == 1 { 0 } else { b_strides[i] };
        }
        let n = a.len();
        let meta = BroadcastMeta {
            rank: ra as i32,
            shape: fixed(&a.shape, op)?,
            b_stride: fixed(&b_stride, op)?,
            n: n as i64,
            same_shape: (a.shape == b.shape) as i32,
        };
        let mut out = self.alloc(n)?;
        if n > 0 {
            let f = self.func(Module::Elementwise, kernel)?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*a.data).arg(&*b.data).arg(&meta);
            // SAFETY: shapes checked above; b's strides stay inside b.
            unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        }
        Ok(self.tensor(out, a.shape.clone()))
    }

    /// The sum over `axis`, kept as an axis of length 1 (the trait's shape). An axis longer
    /// than [`SUM_CHUNK`] is summed in chunks first, and the chunk sums again (the long sums
    /// of a backward, e.g. a weight's gradient over every token, would otherwise be one
    /// thread per output walking thousands of rows).
    pub(crate) fn sum_axis_f32(&self, t: &CudaTensor, axis: usize) -> Result<CudaTensor> {
        if axis >= t.shape.len() {
            return Err(Error::shape("sum_axis", format!("axis {axis} of {:?}", t.shape)));
        }
        let (outer, len, inner): (usize, usize, usize) =
            (t.shape[..axis].iter().product(), t.shape[axis], t.shape[axis + 1..].iter().product());
        let mut shape = t.shape.clone();
        shape[axis] = 1;
        if len == 0 {
            return self.zeros_f32(&shape);
        }
        let chunks = len.div_ceil(SUM_CHUNK);
        let mut out = self.alloc(outer * chunks * inner)?;
        if outer * inner > 0 {
            let f = self.func(Module::Elementwise, "sum_axis_f32")?;
            let dims = [outer as i64, len as i64, inner as i64, SUM_CHUNK as i64];
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*t.data);
            for d in &dims {
                launch.arg(d);
            }
            // SAFETY: outer × len × inner elements in x, outer × chunks × inner in out.
            unsafe { launch.launch(elementwise_cfg(outer * chunks * inner)) }.map_err(err)?;
        }
        let partial = self.tensor(out, [outer, chunks, inner].to_vec());
        let total = if chunks > 1 { self.sum_axis_f32(&partial, 1)? } else { partial };
        self.reshape_f32(&total, &shape)
    }

    pub(crate) fn scale_f32(&self, a: &CudaTensor, s: f32) -> Result<CudaTensor> {
        let n = a.len();
        let mut out = self.alloc(n)?;
        if n > 0 {
            let f = self.func(Module::Elementwise, "scale_f32")?;
            let n64 = n as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*a.data).arg(&s).arg(&n64);
            // SAFETY: n elements in both buffers.
            unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        }
        Ok(self.tensor(out, a.shape.clone()))
    }
}
