//! [`ElementwiseOps`]: the broadcasting add and mul, scale, and the chunked sum over an
//! axis (`kernels/elementwise.cu`).

use crate::device::{err, CudaBackend, CudaTensor};
use crate::kernels::{elementwise_cfg, Module};
use crate::layout::{fixed, strides, MAX_RANK};
use cudarc::driver::{DeviceRepr, PushKernelArg};
use v3lab_reference::backend::{ElementwiseOps, LayoutOps, MemoryOps};
use v3lab_reference::{Error, Result};

/// Terms one thread of `sum_axis` adds before the partial sums are summed again: 64
/// keeps every sum over K experts (≤ 64) in the CPU's order, bit for bit.
const SUM_CHUNK: usize = 64;

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

impl CudaBackend {
    /// `a ∘ b` with `b` broadcast to `a`'s shape (numpy rules, as the CPU backend).
    fn broadcast_binary(&self, a: &CudaTensor, b: &CudaTensor, kernel: &'static str) -> Result<CudaTensor> {
        let op = if kernel == "add_f32" { "add" } else { "mul" };
        let (ra, rb) = (a.shape.len(), b.shape.len());
        let bad = || Error::shape(op, format!("{:?} and {:?}", a.shape, b.shape));
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
}

impl ElementwiseOps for CudaBackend {
    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.broadcast_binary(a, b, "add_f32")
    }

    fn mul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.broadcast_binary(a, b, "mul_f32")
    }

    fn scale(&self, a: &CudaTensor, s: f32) -> Result<CudaTensor> {
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

    /// The sum over `axis`, kept as an axis of length 1 (the trait's shape). An axis longer
    /// than `SUM_CHUNK` is summed in chunks first, and the chunk sums again (the long sums
    /// of a backward, e.g. a weight's gradient over every token, would otherwise be one
    /// thread per output walking thousands of rows).
    fn sum_axis(&self, t: &CudaTensor, axis: usize) -> Result<CudaTensor> {
        if axis >= t.shape.len() {
            return Err(Error::shape("sum_axis", format!("axis {axis} of {:?}", t.shape)));
        }
        let (outer, len, inner): (usize, usize, usize) =
            (t.shape[..axis].iter().product(), t.shape[axis], t.shape[axis + 1..].iter().product());
        let mut shape = t.shape.clone();
        shape[axis] = 1;
        if len == 0 {
            return self.zeros(&shape);
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
        let total = if chunks > 1 { self.sum_axis(&partial, 1)? } else { partial };
        self.reshape(&total, &shape)
    }
}
