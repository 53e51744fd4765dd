//! `impl Backend for CudaBackend`: each method delegates to the family module that holds
//! it; the two fused components (`latent_attention_forward`, `expert_dispatch`) are
//! overridden with device kernels.

use crate::device::{CudaBackend, CudaIndices, CudaTensor, NAME};
use ndarray::{ArrayD, ArrayViewD};
use v3lab_reference::backend::{AdamWStep, Dispatch, Routing};
use v3lab_reference::{Backend, Error, Result, RouteSpec};

/// Training on the GPU (backward passes, AdamW) is the next CUDA issue; until then each such
/// operation says so instead of pretending.
fn not_yet<T>(op: &str) -> Result<T> {
    Err(Error::Backend {
        backend: NAME,
        msg: format!("{op} is not implemented on CUDA yet (training runs on the CPU reference)"),
    })
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Indices = CudaIndices;

    fn name(&self) -> &'static str {
        NAME
    }

    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<CudaTensor> {
        self.upload_f32(host)
    }
    fn download(&self, t: &CudaTensor) -> Result<ArrayD<f32>> {
        self.download_f32(t)
    }
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<CudaIndices> {
        self.upload_i64(host)
    }
    fn download_indices(&self, t: &CudaIndices) -> Result<ArrayD<i64>> {
        self.download_i64(t)
    }
    fn indices_shape(&self, t: &CudaIndices) -> Vec<usize> {
        t.shape.clone()
    }
    fn shape(&self, t: &CudaTensor) -> Vec<usize> {
        t.shape.clone()
    }
    fn zeros(&self, shape: &[usize]) -> Result<CudaTensor> {
        self.zeros_f32(shape)
    }

    fn reshape(&self, t: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        self.reshape_f32(t, shape)
    }
    fn permute(&self, t: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
        self.permute_f32(t, axes)
    }
    fn narrow(&self, t: &CudaTensor, axis: usize, start: usize, len: usize) -> Result<CudaTensor> {
        self.narrow_f32(t, axis, start, len)
    }
    fn concat(&self, parts: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
        self.concat_f32(parts, axis)
    }
    fn expand(&self, t: &CudaTensor, axis: usize, n: usize) -> Result<CudaTensor> {
        self.expand_f32(t, axis, n)
    }
    fn write_at(&self, dst: &mut CudaTensor, src: &CudaTensor, axis: usize, start: usize) -> Result<()> {
        self.write_at_f32(dst, src, axis, start)
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary_f32(a, b, "add_f32")
    }
    fn mul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary_f32(a, b, "mul_f32")
    }
    fn scale(&self, a: &CudaTensor, s: f32) -> Result<CudaTensor> {
        self.scale_f32(a, s)
    }

    fn linear(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        self.linear_f32(x, w)
    }
    fn matmul(&self, a: &CudaTensor, b: &CudaTensor, trans_a: bool, trans_b: bool) -> Result<CudaTensor> {
        self.matmul_f32(a, b, trans_a, trans_b)
    }

    fn rms_norm_forward(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<(CudaTensor, CudaTensor)> {
        self.rms_norm_forward_f32(x, w, eps)
    }
    fn swiglu_forward(&self, gate: &CudaTensor, up: &CudaTensor) -> Result<CudaTensor> {
        self.swiglu_forward_f32(gate, up)
    }
    fn rope_forward(&self, x: &CudaTensor, cos: &CudaTensor, sin: &CudaTensor, start_pos: usize) -> Result<CudaTensor> {
        self.rope_forward_f32(x, cos, sin, start_pos)
    }
    fn embedding_forward(&self, table: &CudaTensor, tokens: &CudaIndices) -> Result<CudaTensor> {
        self.embedding_forward_f32(table, tokens)
    }

    fn attention_forward(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.attention_forward_f32(q, k, v, scale, q_offset)
    }

    fn latent_attention_forward(
        &self,
        q_latent: &CudaTensor,
        q_pe: &CudaTensor,
        kv_latent: &CudaTensor,
        k_pe: &CudaTensor,
        scale: f32,
        q_offset: usize,
    ) -> Result<CudaTensor> {
        self.latent_attention_forward_f32(q_latent, q_pe, kv_latent, k_pe, scale, q_offset)
    }

    fn route(&self, logits: &CudaTensor, bias: Option<&CudaTensor>, spec: &RouteSpec) -> Result<Routing<Self>> {
        self.route_f32(logits, bias, spec)
    }
    fn gather_rows(&self, x: &CudaTensor, rows: &CudaIndices) -> Result<CudaTensor> {
        self.gather_rows_f32(x, rows)
    }
    fn scatter_add_rows(&self, dst: &CudaTensor, rows: &CudaIndices, src: &CudaTensor) -> Result<CudaTensor> {
        self.scatter_add_rows_f32(dst, rows, src)
    }
    fn expert_dispatch(&self, indices: &CudaIndices, n_experts: usize) -> Result<Dispatch<Self>> {
        self.expert_dispatch_i64(indices, n_experts)
    }
    fn sum_axis(&self, t: &CudaTensor, axis: usize) -> Result<CudaTensor> {
        self.sum_axis_f32(t, axis)
    }

    // ----- f64 transfers: the device holds f32, converted on the host ------------------
    fn download_f64(&self, t: &CudaTensor) -> Result<ArrayD<f64>> {
        Ok(self.download_f32(t)?.mapv(f64::from))
    }
    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<CudaTensor> {
        self.upload_f32(host.mapv(|x| x as f32).view())
    }

    // ----- training: not on the GPU yet ---------------------------------------------
    fn rms_norm_backward(
        &self,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
    ) -> Result<(CudaTensor, CudaTensor)> {
        not_yet("rms_norm_backward")
    }
    fn swiglu_backward(&self, _: &CudaTensor, _: &CudaTensor, _: &CudaTensor) -> Result<(CudaTensor, CudaTensor)> {
        not_yet("swiglu_backward")
    }
    fn rope_backward(&self, _: &CudaTensor, _: &CudaTensor, _: &CudaTensor, _: usize) -> Result<CudaTensor> {
        not_yet("rope_backward")
    }
    fn embedding_backward(&self, _: &CudaIndices, _: &CudaTensor, _: usize) -> Result<CudaTensor> {
        not_yet("embedding_backward")
    }
    fn cross_entropy_forward(&self, _: &CudaTensor, _: &CudaIndices) -> Result<(f64, CudaTensor)> {
        not_yet("cross_entropy_forward")
    }
    fn cross_entropy_backward(&self, _: &CudaTensor, _: &CudaTensor, _: &CudaIndices, _: f32) -> Result<CudaTensor> {
        not_yet("cross_entropy_backward")
    }
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
        _: &CudaTensor,
        _: f32,
        _: usize,
    ) -> Result<(CudaTensor, CudaTensor, CudaTensor)> {
        not_yet("attention_backward")
    }
    fn adamw_step(
        &self,
        _: &mut CudaTensor,
        _: &mut CudaTensor,
        _: &mut CudaTensor,
        _: &CudaTensor,
        _: &AdamWStep,
    ) -> Result<()> {
        not_yet("adamw_step")
    }
    fn route_backward(
        &self,
        _: &Routing<Self>,
        _: &CudaTensor,
        _: Option<&CudaTensor>,
        _: &RouteSpec,
    ) -> Result<CudaTensor> {
        not_yet("route_backward")
    }
}
