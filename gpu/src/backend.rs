//! `impl Backend for CudaBackend`: each method delegates to the family module that holds
//! it; the two fused components (`latent_attention_forward`, `expert_dispatch`) are
//! overridden with device kernels. Every operation, forward and training, runs on the GPU.

use crate::device::{CudaBackend, CudaIndices, CudaTensor, NAME};
use ndarray::{ArrayD, ArrayViewD};
use v3lab_reference::backend::{AdamWStep, Dispatch, Routing};
use v3lab_reference::{Backend, Result, RouteSpec};

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

    // ----- training --------------------------------------------------------------------
    fn rms_norm_backward(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        rstd: &CudaTensor,
        dy: &CudaTensor,
    ) -> Result<(CudaTensor, CudaTensor)> {
        self.rms_norm_backward_f32(x, w, rstd, dy)
    }
    fn swiglu_backward(&self, gate: &CudaTensor, up: &CudaTensor, dy: &CudaTensor) -> Result<(CudaTensor, CudaTensor)> {
        self.swiglu_backward_f32(gate, up, dy)
    }
    fn rope_backward(
        &self,
        dy: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        start_pos: usize,
    ) -> Result<CudaTensor> {
        self.rope_backward_f32(dy, cos, sin, start_pos)
    }
    fn embedding_backward(&self, tokens: &CudaIndices, dy: &CudaTensor, vocab: usize) -> Result<CudaTensor> {
        self.embedding_backward_f32(tokens, dy, vocab)
    }
    fn cross_entropy_forward(&self, logits: &CudaTensor, targets: &CudaIndices) -> Result<(f64, CudaTensor)> {
        self.cross_entropy_forward_f32(logits, targets)
    }
    fn cross_entropy_backward(
        &self,
        logits: &CudaTensor,
        lse: &CudaTensor,
        targets: &CudaIndices,
        dloss: f32,
    ) -> Result<CudaTensor> {
        self.cross_entropy_backward_f32(logits, lse, targets, dloss)
    }
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
        self.attention_backward_f32(q, k, v, out, lse, dout, scale, q_offset)
    }
    fn adamw_step(
        &self,
        param: &mut CudaTensor,
        m: &mut CudaTensor,
        v: &mut CudaTensor,
        grad: &CudaTensor,
        h: &AdamWStep,
    ) -> Result<()> {
        self.adamw_step_f32(param, m, v, grad, h)
    }
    fn sum_squares(&self, t: &CudaTensor) -> Result<f64> {
        self.sum_squares_f32(t)
    }
    fn route_backward(
        &self,
        routing: &Routing<Self>,
        dweights: &CudaTensor,
        dscores: Option<&CudaTensor>,
        spec: &RouteSpec,
    ) -> Result<CudaTensor> {
        self.route_backward_f32(routing, dweights, dscores, spec)
    }
}
