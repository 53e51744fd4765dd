//! [`NnOps`]: RMSNorm, SwiGLU, the rotary embedding and the token embedding, each forward
//! with its backward (`kernels/{rms_norm,swiglu,rope,embedding}.cu`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor};
use crate::kernels::{elementwise_cfg, rows_cfg, Module, ROW_THREADS};
use cudarc::driver::PushKernelArg;
use v3lab_reference::backend::{ElementwiseOps, LayoutOps, MemoryOps, NnOps};
use v3lab_reference::{Error, Result};

impl CudaBackend {
    /// Either direction: `op` names it in errors, `kernel` is its entry point.
    fn rope_rotate(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        start_pos: usize,
        op: &'static str,
        kernel: &'static str,
    ) -> Result<CudaTensor> {
        let &[_, seq, heads, width] = x.shape.as_slice() else {
            return Err(Error::shape(op, format!("x must be [B, S, H, R], got {:?}", x.shape)));
        };
        let (&[rows, half], true) = (cos.shape.as_slice(), cos.shape == sin.shape) else {
            return Err(Error::shape(op, format!("tables {:?} and {:?}", cos.shape, sin.shape)));
        };
        if width % 2 != 0 || half != width / 2 || start_pos + seq > rows {
            return Err(Error::shape(op, format!("x {:?} at {start_pos} with a table {:?}", x.shape, cos.shape)));
        }
        let pairs = x.len() / 2;
        let mut out = self.alloc(x.len())?;
        if pairs > 0 {
            let f = self.func(Module::Rope, kernel)?;
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
}

impl NnOps for CudaBackend {
    fn rms_norm_forward(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<(CudaTensor, CudaTensor)> {
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

    /// `dx` per row in one block; `dw` as the rows' shares `[rows, d]` summed by `sum_axis`
    /// (a fixed order: the same on every run, unlike an atomic add).
    fn rms_norm_backward(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        rstd: &CudaTensor,
        dy: &CudaTensor,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let d = x.shape.last().copied().unwrap_or(0);
        let rows = x.len().checked_div(d).unwrap_or(0);
        if x.shape != dy.shape || w.shape != [d] || rstd.len() != rows || d == 0 {
            return Err(Error::shape(
                "rms_norm_backward",
                format!("x {:?}, w {:?}, rstd {:?}, dy {:?}", x.shape, w.shape, rstd.shape, dy.shape),
            ));
        }
        let (mut dx, mut dw_rows) = (self.alloc(x.len())?, self.alloc(x.len())?);
        if rows == 0 {
            return Ok((self.tensor(dx, x.shape.clone()), self.zeros(&[d])?));
        }
        let f = self.func(Module::RmsNorm, "rms_norm_backward_f32")?;
        let d64 = d as i64;
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&mut dx).arg(&mut dw_rows).arg(&*x.data).arg(&*w.data).arg(&*rstd.data).arg(&*dy.data).arg(&d64);
        // SAFETY: rows × d elements in x, dy, dx, dw_rows; d in w; rows in rstd (checked).
        unsafe { launch.launch(rows_cfg(rows, ROW_THREADS)) }.map_err(err)?;
        let dw = self.sum_axis(&self.tensor(dw_rows, vec![rows, d]), 0)?;
        Ok((self.tensor(dx, x.shape.clone()), self.reshape(&dw, &[d])?))
    }

    fn swiglu_forward(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
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

    fn swiglu_backward(&self, gate: &CudaTensor, up: &CudaTensor, dy: &CudaTensor) -> Result<(CudaTensor, CudaTensor)> {
        if gate.shape != up.shape || gate.shape != dy.shape {
            return Err(Error::shape("swiglu_backward", format!("{:?}, {:?}, {:?}", gate.shape, up.shape, dy.shape)));
        }
        let n = gate.len();
        let (mut dgate, mut dup) = (self.alloc(n)?, self.alloc(n)?);
        if n > 0 {
            let f = self.func(Module::Swiglu, "swiglu_backward_f32")?;
            let n64 = n as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut dgate).arg(&mut dup).arg(&*gate.data).arg(&*up.data).arg(&*dy.data).arg(&n64);
            // SAFETY: n elements in each buffer.
            unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        }
        Ok((self.tensor(dgate, gate.shape.clone()), self.tensor(dup, gate.shape.clone())))
    }

    fn rope_forward(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor, start_pos: usize) -> Result<CudaTensor> {
        self.rope_rotate(x, cos, sin, start_pos, "rope_forward", "rope_forward_f32")
    }

    /// The transposed rotation (angle −θ) applied to `dy`.
    fn rope_backward(
        &self,
        dy: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        start_pos: usize,
    ) -> Result<CudaTensor> {
        self.rope_rotate(dy, cos, sin, start_pos, "rope_backward", "rope_backward_f32")
    }

    fn embedding_forward(&self, table: &CudaTensor, tokens: &CudaIndices) -> Result<CudaTensor> {
        let &[vocab, d] = table.shape.as_slice() else {
            return Err(Error::shape("embedding_forward", format!("table must be [V, D], got {:?}", table.shape)));
        };
        let n: usize = tokens.shape.iter().product();
        let mut shape = tokens.shape.clone();
        shape.push(d);
        let mut out = self.alloc(n * d)?;
        self.launch_rows(Module::Embedding, "embedding_forward_f32", &mut out, &table.data, tokens, vocab, d)?;
        Ok(self.tensor(out, shape))
    }

    /// The token positions are sorted by id on the host (a counting sort that also checks
    /// every id); each element of the `[vocab, D]` gradient then sums its rows in token
    /// order, with no atomics: the CPU's order, the same on every run.
    fn embedding_backward(&self, tokens: &CudaIndices, dy: &CudaTensor, vocab: usize) -> Result<CudaTensor> {
        let n: usize = tokens.shape.iter().product();
        let d = dy.shape.last().copied().unwrap_or(0);
        if dy.shape.is_empty() || dy.len() != n * d {
            return Err(Error::shape("embedding_backward", format!("dy {:?} for tokens {:?}", dy.shape, tokens.shape)));
        }
        let ids = self.download_indices(tokens)?;
        let mut offsets = vec![0i64; vocab + 1];
        for &t in ids.iter() {
            let t = usize::try_from(t).ok().filter(|&t| t < vocab).ok_or_else(|| {
                Error::Input(format!("embedding_backward: token id {t} out of range for a vocabulary of {vocab}"))
            })?;
            offsets[t + 1] += 1;
        }
        for v in 0..vocab {
            offsets[v + 1] += offsets[v];
        }
        let mut next = offsets.clone();
        let mut by_token = vec![0i64; n];
        for (pos, &t) in ids.iter().enumerate() {
            by_token[next[t as usize] as usize] = pos as i64;
            next[t as usize] += 1;
        }
        if n == 0 || d == 0 {
            return self.zeros(&[vocab, d]);
        }
        let mut grad = self.alloc(vocab * d)?;
        if vocab > 0 {
            let by_token = self.stream.clone_htod(&by_token).map_err(err)?;
            let offsets = self.stream.clone_htod(&offsets).map_err(err)?;
            let f = self.func(Module::Embedding, "embedding_backward_f32")?;
            let (v64, d64) = (vocab as i64, d as i64);
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut grad).arg(&*dy.data).arg(&by_token).arg(&offsets).arg(&v64).arg(&d64);
            // SAFETY: offsets has vocab + 1 entries ending at n; by_token holds rows < n of dy.
            unsafe { launch.launch(elementwise_cfg(vocab * d)) }.map_err(err)?;
        }
        Ok(self.tensor(grad, vec![vocab, d]))
    }
}
