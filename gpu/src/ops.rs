//! Norms, activation, rotary embedding, embedding lookup and row gather/scatter
//! (`kernels/{rms_norm_forward,swiglu_forward,rope_forward,embedding_forward,rows}.cu`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor};
use crate::kernels::{elementwise_cfg, rows_cfg, Module};
use cudarc::driver::PushKernelArg;
use v3lab_reference::{Error, Result};

/// Threads per row for row-wise kernels (norms, row copies): enough to cover D = 7168 in
/// 28 steps; one block per row keeps the reductions simple.
const ROW_THREADS: u32 = 256;

impl CudaBackend {
    pub(crate) fn rms_norm_forward_f32(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let d = *x.shape.last().ok_or_else(|| Error::shape("rms_norm_forward", "scalar operand"))?;
        if d == 0 {
            return Err(Error::shape("rms_norm_forward", format!("x {:?} has rows of width 0", x.shape)));
        }
        if w.shape != [d] {
            return Err(Error::shape("rms_norm_forward", format!("x {:?} with weight {:?}", x.shape, w.shape)));
        }
        let rows = x.len() / d;
        let (mut y, mut rstd) = (self.alloc(x.len())?, self.alloc(rows)?);
        if rows > 0 {
            let f = self.func(Module::RmsNorm, "rms_norm_forward_f32")?;
            let d64 = d as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut y).arg(&mut rstd).arg(&*x.data).arg(&*w.data).arg(&d64).arg(&eps);
            // SAFETY: rows × d elements in x and y, d in w, rows in rstd.
            unsafe { launch.launch(rows_cfg(rows, ROW_THREADS)) }.map_err(err)?;
        }
        let rows_shape = x.shape[..x.shape.len() - 1].to_vec();
        Ok((self.tensor(y, x.shape.clone()), self.tensor(rstd, rows_shape)))
    }

    pub(crate) fn swiglu_forward_f32(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        if gate.shape != up.shape {
            return Err(Error::shape("swiglu_forward", format!("{:?} vs {:?}", gate.shape, up.shape)));
        }
        let n = gate.len();
        let mut out = self.alloc(n)?;
        if n > 0 {
            let f = self.func(Module::Swiglu, "swiglu_forward_f32")?;
            let n64 = n as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*gate.data).arg(&*up.data).arg(&n64);
            // SAFETY: n elements in each buffer.
            unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        }
        Ok(self.tensor(out, gate.shape.clone()))
    }

    pub(crate) fn rope_forward_f32(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        start_pos: usize,
    ) -> Result<CudaTensor> {
        let &[_, seq, heads, width] = x.shape.as_slice() else {
            return Err(Error::shape("rope_forward", format!("x must be [B, S, H, R], got {:?}", x.shape)));
        };
        let (&[rows, half], true) = (cos.shape.as_slice(), cos.shape == sin.shape) else {
            return Err(Error::shape("rope_forward", format!("tables {:?} and {:?}", cos.shape, sin.shape)));
        };
        if width % 2 != 0 || half != width / 2 || start_pos + seq > rows {
            return Err(Error::shape(
                "rope_forward",
                format!("x {:?} at {start_pos} with a table {:?}", x.shape, cos.shape),
            ));
        }
        let pairs = x.len() / 2;
        let mut out = self.alloc(x.len())?;
        if pairs > 0 {
            let f = self.func(Module::Rope, "rope_forward_f32")?;
            let args = [seq as i64, heads as i64, half as i64, start_pos as i64, pairs as i64];
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*x.data).arg(&*cos.data).arg(&*sin.data);
            for a in &args {
                launch.arg(a);
            }
            // SAFETY: positions start_pos..start_pos+seq are inside the tables (checked).
            unsafe { launch.launch(elementwise_cfg(pairs)) }.map_err(err)?;
        }
        Ok(self.tensor(out, x.shape.clone()))
    }

    pub(crate) fn embedding_forward_f32(&self, table: &CudaTensor, tokens: &CudaIndices) -> Result<CudaTensor> {
        let &[vocab, d] = table.shape.as_slice() else {
            return Err(Error::shape("embedding_forward", format!("table must be [V, D], got {:?}", table.shape)));
        };
        let n: usize = tokens.shape.iter().product();
        let mut shape = tokens.shape.clone();
        shape.push(d);
        let mut out = self.alloc(n * d)?;
        if n > 0 && d > 0 {
            let f = self.func(Module::Embedding, "embedding_forward_f32")?;
            let (v64, d64) = (vocab as i64, d as i64);
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*table.data).arg(&*tokens.data).arg(&v64).arg(&d64).arg(&*word);
            // SAFETY: ids are range-checked in the kernel; n × d output elements.
            unsafe { launch.launch(rows_cfg(n, ROW_THREADS)) }.map_err(err)?;
        }
        Ok(self.tensor(out, shape))
    }

    pub(crate) fn gather_rows_f32(&self, x: &CudaTensor, rows: &CudaIndices) -> Result<CudaTensor> {
        let &[n_rows, d] = x.shape.as_slice() else {
            return Err(Error::shape("gather_rows", format!("x must be [N, D], got {:?}", x.shape)));
        };
        let m: usize = rows.shape.iter().product();
        let mut out = self.alloc(m * d)?;
        if m > 0 && d > 0 {
            let f = self.func(Module::Rows, "gather_rows_f32")?;
            let (n64, d64) = (n_rows as i64, d as i64);
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*x.data).arg(&*rows.data).arg(&n64).arg(&d64).arg(&*word);
            // SAFETY: rows are range-checked in the kernel; m × d output elements.
            unsafe { launch.launch(rows_cfg(m, ROW_THREADS)) }.map_err(err)?;
        }
        Ok(self.tensor(out, vec![m, d]))
    }

    pub(crate) fn scatter_add_rows_f32(
        &self,
        dst: &CudaTensor,
        rows: &CudaIndices,
        src: &CudaTensor,
    ) -> Result<CudaTensor> {
        let m: usize = rows.shape.iter().product();
        let (&[n_rows, d], &[sm, sd]) = (dst.shape.as_slice(), src.shape.as_slice()) else {
            return Err(Error::shape("scatter_add_rows", format!("{:?} rows into {:?}", src.shape, dst.shape)));
        };
        if sm != m || sd != d {
            return Err(Error::shape("scatter_add_rows", format!("{:?} rows into {:?}", src.shape, dst.shape)));
        }
        let mut out = self.stream.clone_dtod(&*dst.data).map_err(err)?;
        if m > 0 && d > 0 {
            let f = self.func(Module::Rows, "scatter_add_rows_f32")?;
            let (n64, d64) = (n_rows as i64, d as i64);
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*src.data).arg(&*rows.data).arg(&n64).arg(&d64).arg(&*word);
            // SAFETY: rows are range-checked in the kernel; m × d source elements.
            unsafe { launch.launch(rows_cfg(m, ROW_THREADS)) }.map_err(err)?;
        }
        Ok(self.tensor(out, dst.shape.clone()))
    }
}
