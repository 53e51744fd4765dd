//! [`AttentionOps`]: causal attention (forward and backward) and MLA's absorbed decode over the latent cache
//! (`kernels/attention.cu`: one block per query row, online softmax over key tiles; the
//! backward one block per query row for dq, one per key row for dk and dv).

use crate::device::{err, CudaBackend, CudaTensor};
use crate::kernels::{Module, MAX_SHARED_BYTES, REDUCE_SCRATCH_BYTES};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use v3lab_reference::backend::AttentionOps;
use v3lab_reference::{Error, Result};

/// `ATT_THREADS`, `ATT_TILE` and the widest value row of `kernels/attention.cu`.
const ATT_THREADS: u32 = 128;
const ATT_TILE: usize = 64;
const MAX_VALUE_WIDTH: usize = 128 * 8;

/// One block per row of `rows` (queries, or keys for the backward's dk/dv) per head per batch.
fn grid(rows: usize, heads: usize, batch: usize, shared_floats: usize, op: &'static str) -> Result<LaunchConfig> {
    if heads > 65535 || batch > 65535 {
        return Err(Error::shape(op, format!("{batch} batches × {heads} heads exceed the grid")));
    }
    let shared = shared_floats * 4;
    if shared + REDUCE_SCRATCH_BYTES > MAX_SHARED_BYTES {
        return Err(Error::shape(op, format!("query width needs {shared} bytes of shared memory, {REDUCE_SCRATCH_BYTES} more with the kernel's own (> 48 KiB)")));
    }
    Ok(LaunchConfig {
        grid_dim: (rows as u32, heads as u32, batch as u32),
        block_dim: (ATT_THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    })
}

impl AttentionOps for CudaBackend {
    fn attention_forward(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let (&[batch, seq, heads, dk], &[kb, keys, kh, dk2], &[vb, vt, vh, dv]) =
            (q.shape.as_slice(), k.shape.as_slice(), v.shape.as_slice())
        else {
            return Err(Error::shape("attention_forward", "q, k, v must be rank 4"));
        };
        if (kb, kh, dk2) != (batch, heads, dk)
            || (vb, vt, vh) != (batch, keys, heads)
            || q_offset + seq > keys
            || dv > MAX_VALUE_WIDTH
        {
            return Err(Error::shape(
                "attention_forward",
                format!("q {:?}, k {:?}, v {:?}, offset {q_offset}", q.shape, k.shape, v.shape),
            ));
        }
        let mut out = self.alloc(batch * seq * heads * dv)?;
        let mut lse = self.alloc(batch * heads * seq)?;
        if batch * seq * heads > 0 {
            let cfg = grid(seq, heads, batch, dk + ATT_TILE, "attention_forward")?;
            let f = self.func(Module::Attention, "attention_forward_f32")?;
            let dims = [seq as i64, heads as i64, keys as i64, dk as i64, dv as i64];
            let off = q_offset as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&mut lse).arg(&*q.data).arg(&*k.data).arg(&*v.data);
            for d in &dims {
                launch.arg(d);
            }
            launch.arg(&scale).arg(&off);
            // SAFETY: shapes checked above; every row reads keys 0..=q_offset+s < T.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok((self.tensor(out, vec![batch, seq, heads, dv]), self.tensor(lse, vec![batch, heads, seq])))
    }

    /// Backward of [`AttentionOps::attention_forward`]: dq (and D = ⟨dout, out⟩ per row) by query
    /// rows, then dk and dv by key rows, each recomputing P from the saved `lse`.
    fn attention_backward(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        out: &CudaTensor,
        lse: &CudaTensor,
        dout: &CudaTensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<(CudaTensor, CudaTensor, CudaTensor)> {
        let op = "attention_backward";
        let (&[batch, seq, heads, dk], &[kb, keys, kh, dk2], &[vb, vt, vh, dv]) =
            (q.shape.as_slice(), k.shape.as_slice(), v.shape.as_slice())
        else {
            return Err(Error::shape(op, "q, k, v must be rank 4"));
        };
        if (kb, kh, dk2) != (batch, heads, dk)
            || (vb, vt, vh) != (batch, keys, heads)
            || q_offset + seq > keys
            || dk.max(dv) > MAX_VALUE_WIDTH
            || out.shape != [batch, seq, heads, dv]
            || dout.shape != out.shape
            || lse.shape != [batch, heads, seq]
        {
            return Err(Error::shape(
                op,
                format!(
                    "q {:?}, k {:?}, v {:?}, out {:?}, lse {:?}, dout {:?}, offset {q_offset}",
                    q.shape, k.shape, v.shape, out.shape, lse.shape, dout.shape
                ),
            ));
        }
        let mut dq = self.alloc(q.len())?;
        let mut dvec = self.alloc(batch * heads * seq)?;
        let dims = [seq as i64, heads as i64, keys as i64, dk as i64, dv as i64];
        let off = q_offset as i64;
        if batch * seq * heads > 0 {
            let cfg = grid(seq, heads, batch, dk + dv + ATT_TILE, op)?;
            let f = self.func(Module::Attention, "attention_backward_dq_f32")?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut dq).arg(&mut dvec).arg(&*q.data).arg(&*k.data).arg(&*v.data);
            launch.arg(&*out.data).arg(&*lse.data).arg(&*dout.data);
            for d in &dims {
                launch.arg(d);
            }
            launch.arg(&scale).arg(&off);
            // SAFETY: shapes checked above; every row reads keys 0..=q_offset+s < T.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        let (mut dk_out, mut dv_out) = (self.alloc(k.len())?, self.alloc(v.len())?);
        if batch * keys * heads > 0 {
            let cfg = grid(keys, heads, batch, dk + dv + 2 * ATT_TILE, op)?;
            let f = self.func(Module::Attention, "attention_backward_dkv_f32")?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut dk_out).arg(&mut dv_out).arg(&*q.data).arg(&*k.data).arg(&*v.data);
            launch.arg(&*lse.data).arg(&dvec).arg(&*dout.data);
            for d in &dims {
                launch.arg(d);
            }
            launch.arg(&scale).arg(&off);
            // SAFETY: shapes checked above; key rows read queries s < S only; every key row
            // (seen by no query or not) writes its dk and dv.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok((
            self.tensor(dq, q.shape.clone()),
            self.tensor(dk_out, k.shape.clone()),
            self.tensor(dv_out, v.shape.clone()),
        ))
    }

    /// The fused override of `AttentionOps::latent_attention_forward`: every head reads the one
    /// latent cache row per position directly; nothing is expanded or concatenated.
    fn latent_attention_forward(
        &self,
        q_latent: &CudaTensor,
        q_pe: &CudaTensor,
        kv_latent: &CudaTensor,
        k_pe: &CudaTensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<CudaTensor> {
        let op = "latent_attention_forward";
        let (&[batch, seq, heads, c], &[pb, ps, ph, rope], &[kb, keys, kc], &[eb, et, er]) =
            (q_latent.shape.as_slice(), q_pe.shape.as_slice(), kv_latent.shape.as_slice(), k_pe.shape.as_slice())
        else {
            return Err(Error::shape(op, "q_latent, q_pe must be rank 4, kv_latent, k_pe rank 3"));
        };
        if (pb, ps, ph) != (batch, seq, heads)
            || (kb, kc) != (batch, c)
            || (eb, et, er) != (batch, keys, rope)
            || q_offset + seq > keys
            || c > MAX_VALUE_WIDTH
        {
            return Err(Error::shape(
                op,
                format!(
                    "q_latent {:?}, q_pe {:?}, kv_latent {:?}, k_pe {:?}, offset {q_offset}",
                    q_latent.shape, q_pe.shape, kv_latent.shape, k_pe.shape
                ),
            ));
        }
        let mut out = self.alloc(batch * seq * heads * c)?;
        if batch * seq * heads > 0 {
            let cfg = grid(seq, heads, batch, c + rope + ATT_TILE, op)?;
            let f = self.func(Module::Attention, "latent_attention_forward_f32")?;
            let dims = [seq as i64, heads as i64, keys as i64, c as i64, rope as i64];
            let off = q_offset as i64;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut out).arg(&*q_latent.data).arg(&*q_pe.data).arg(&*kv_latent.data).arg(&*k_pe.data);
            for d in &dims {
                launch.arg(d);
            }
            launch.arg(&scale).arg(&off);
            // SAFETY: shapes checked above; rows read keys 0..=q_offset+s < T.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok(self.tensor(out, vec![batch, seq, heads, c]))
    }
}
