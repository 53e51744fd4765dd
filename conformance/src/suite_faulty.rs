//! A CPU backend with one deliberate fault, to show that each conformance check can fail:
//! it runs [`CpuBackend`] and, for the chosen operation, returns a slightly wrong result
//! (every value scaled by 1 + 1e-3, or indices permuted), far outside every f32 tolerance
//! and far inside what a plausible kernel bug looks like.

use ndarray::{ArrayD, ArrayViewD};
use v3lab_reference::backend::{AdamWStep, Dispatch, Routing};
use v3lab_reference::{Backend, CpuBackend, Result, RouteSpec};

/// Which operation goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the plain reference (every check must pass on it).
    None,
    Permute,
    Concat,
    WriteAt,
    Add,
    Linear,
    Matmul,
    RmsNorm,
    Swiglu,
    Rope,
    Embedding,
    Attention,
    LatentAttention,
    RouteIndices,
    ScatterAdd,
    SumAxis,
    Dispatch,
    RmsNormBackward,
    SwigluBackward,
    RopeBackward,
    EmbeddingBackward,
    /// The cross-entropy's backward (dlogits).
    CrossEntropy,
    AttentionBackward,
    RouteBackward,
    /// The parameter after the update.
    AdamW,
    SumSquares,
}

/// `CpuBackend` with `fault` injected.
#[derive(Debug, Clone, Copy)]
pub struct Faulty {
    fault: Fault,
}

impl Faulty {
    pub fn new(fault: Fault) -> Self {
        Faulty { fault }
    }
    fn off(&self, f: Fault, t: ArrayD<f32>) -> ArrayD<f32> {
        if self.fault == f {
            t * 1.001
        } else {
            t
        }
    }
}

const CPU: CpuBackend = CpuBackend;

impl Backend for Faulty {
    type Tensor = ArrayD<f32>;
    type Indices = ArrayD<i64>;

    fn name(&self) -> &'static str {
        "cpu-with-fault"
    }
    fn upload(&self, host: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        CPU.upload(host)
    }
    fn download(&self, t: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        CPU.download(t)
    }
    fn upload_indices(&self, host: ArrayViewD<'_, i64>) -> Result<ArrayD<i64>> {
        CPU.upload_indices(host)
    }
    fn download_indices(&self, t: &ArrayD<i64>) -> Result<ArrayD<i64>> {
        CPU.download_indices(t)
    }
    fn indices_shape(&self, t: &ArrayD<i64>) -> Vec<usize> {
        CPU.indices_shape(t)
    }
    fn shape(&self, t: &ArrayD<f32>) -> Vec<usize> {
        CPU.shape(t)
    }
    fn zeros(&self, shape: &[usize]) -> Result<ArrayD<f32>> {
        CPU.zeros(shape)
    }
    fn reshape(&self, t: &ArrayD<f32>, shape: &[usize]) -> Result<ArrayD<f32>> {
        CPU.reshape(t, shape)
    }
    fn permute(&self, t: &ArrayD<f32>, axes: &[usize]) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Permute, CPU.permute(t, axes)?))
    }
    fn narrow(&self, t: &ArrayD<f32>, axis: usize, start: usize, len: usize) -> Result<ArrayD<f32>> {
        CPU.narrow(t, axis, start, len)
    }
    fn concat(&self, parts: &[&ArrayD<f32>], axis: usize) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Concat, CPU.concat(parts, axis)?))
    }
    fn expand(&self, t: &ArrayD<f32>, axis: usize, n: usize) -> Result<ArrayD<f32>> {
        CPU.expand(t, axis, n)
    }
    fn write_at(&self, dst: &mut ArrayD<f32>, src: &ArrayD<f32>, axis: usize, start: usize) -> Result<()> {
        let src = self.off(Fault::WriteAt, src.clone());
        CPU.write_at(dst, &src, axis, start)
    }
    fn add(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Add, CPU.add(a, b)?))
    }
    fn mul(&self, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        CPU.mul(a, b)
    }
    fn scale(&self, a: &ArrayD<f32>, s: f32) -> Result<ArrayD<f32>> {
        CPU.scale(a, s)
    }
    fn linear(&self, x: &ArrayD<f32>, w: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Linear, CPU.linear(x, w)?))
    }
    fn matmul(&self, a: &ArrayD<f32>, b: &ArrayD<f32>, ta: bool, tb: bool) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Matmul, CPU.matmul(a, b, ta, tb)?))
    }
    fn rms_norm_forward(&self, x: &ArrayD<f32>, w: &ArrayD<f32>, eps: f32) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let (y, r) = CPU.rms_norm_forward(x, w, eps)?;
        Ok((self.off(Fault::RmsNorm, y), r))
    }
    fn swiglu_forward(&self, gate: &ArrayD<f32>, up: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Swiglu, CPU.swiglu_forward(gate, up)?))
    }
    fn rope_forward(&self, x: &ArrayD<f32>, cos: &ArrayD<f32>, sin: &ArrayD<f32>, p: usize) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Rope, CPU.rope_forward(x, cos, sin, p)?))
    }
    fn embedding_forward(&self, table: &ArrayD<f32>, tokens: &ArrayD<i64>) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::Embedding, CPU.embedding_forward(table, tokens)?))
    }
    fn attention_forward(
        &self,
        q: &ArrayD<f32>,
        k: &ArrayD<f32>,
        v: &ArrayD<f32>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let (o, lse) = CPU.attention_forward(q, k, v, scale, q_offset)?;
        Ok((self.off(Fault::Attention, o), lse))
    }
    fn latent_attention_forward(
        &self,
        q_latent: &ArrayD<f32>,
        q_pe: &ArrayD<f32>,
        kv_latent: &ArrayD<f32>,
        k_pe: &ArrayD<f32>,
        scale: f32,
        q_offset: usize,
    ) -> Result<ArrayD<f32>> {
        let o = CPU.latent_attention_forward(q_latent, q_pe, kv_latent, k_pe, scale, q_offset)?;
        Ok(self.off(Fault::LatentAttention, o))
    }
    fn route(&self, logits: &ArrayD<f32>, bias: Option<&ArrayD<f32>>, spec: &RouteSpec) -> Result<Routing<Self>> {
        let r = CPU.route(logits, bias, spec)?;
        let mut indices = r.indices;
        if self.fault == Fault::RouteIndices {
            // The last two choices of every token swapped (or the only one moved).
            for mut row in indices.rows_mut() {
                let k = row.len();
                if k >= 2 {
                    row.swap(k - 1, k - 2);
                } else {
                    row[0] = (row[0] + 1) % logits.shape()[1] as i64;
                }
            }
        }
        Ok(Routing { weights: r.weights, indices, scores: r.scores })
    }
    fn gather_rows(&self, x: &ArrayD<f32>, rows: &ArrayD<i64>) -> Result<ArrayD<f32>> {
        CPU.gather_rows(x, rows)
    }
    fn scatter_add_rows(&self, dst: &ArrayD<f32>, rows: &ArrayD<i64>, src: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let src = self.off(Fault::ScatterAdd, src.clone());
        CPU.scatter_add_rows(dst, rows, &src)
    }
    fn sum_axis(&self, t: &ArrayD<f32>, axis: usize) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::SumAxis, CPU.sum_axis(t, axis)?))
    }
    fn expert_dispatch(&self, indices: &ArrayD<i64>, n_experts: usize) -> Result<Dispatch<Self>> {
        let d = CPU.expert_dispatch(indices, n_experts)?;
        let mut rows = d.token_rows;
        if self.fault == Fault::Dispatch && !rows.is_empty() {
            // The first gathered row names the wrong token.
            let tokens = indices.shape()[0].max(1) as i64;
            rows[0] = (rows[0] + 1) % tokens;
        }
        Ok(Dispatch { token_rows: rows, slots: d.slots, rows_by_token: d.rows_by_token, offsets: d.offsets })
    }

    // ----- training ---------------------------------------------------------------
    fn download_f64(&self, t: &ArrayD<f32>) -> Result<ArrayD<f64>> {
        CPU.download_f64(t)
    }
    fn upload_f64(&self, host: ArrayViewD<'_, f64>) -> Result<ArrayD<f32>> {
        CPU.upload_f64(host)
    }
    fn rms_norm_backward(
        &self,
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        rstd: &ArrayD<f32>,
        dy: &ArrayD<f32>,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let (dx, dw) = CPU.rms_norm_backward(x, w, rstd, dy)?;
        Ok((self.off(Fault::RmsNormBackward, dx), dw))
    }
    fn swiglu_backward(
        &self,
        gate: &ArrayD<f32>,
        up: &ArrayD<f32>,
        dy: &ArrayD<f32>,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>)> {
        let (dgate, dup) = CPU.swiglu_backward(gate, up, dy)?;
        Ok((self.off(Fault::SwigluBackward, dgate), dup))
    }
    fn rope_backward(&self, dy: &ArrayD<f32>, cos: &ArrayD<f32>, sin: &ArrayD<f32>, p: usize) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::RopeBackward, CPU.rope_backward(dy, cos, sin, p)?))
    }
    fn embedding_backward(&self, tokens: &ArrayD<i64>, dy: &ArrayD<f32>, vocab: usize) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::EmbeddingBackward, CPU.embedding_backward(tokens, dy, vocab)?))
    }
    fn cross_entropy_forward(&self, logits: &ArrayD<f32>, targets: &ArrayD<i64>) -> Result<(f64, ArrayD<f32>)> {
        CPU.cross_entropy_forward(logits, targets)
    }
    fn cross_entropy_backward(
        &self,
        logits: &ArrayD<f32>,
        lse: &ArrayD<f32>,
        targets: &ArrayD<i64>,
        dloss: f32,
    ) -> Result<ArrayD<f32>> {
        Ok(self.off(Fault::CrossEntropy, CPU.cross_entropy_backward(logits, lse, targets, dloss)?))
    }
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        q: &ArrayD<f32>,
        k: &ArrayD<f32>,
        v: &ArrayD<f32>,
        out: &ArrayD<f32>,
        lse: &ArrayD<f32>,
        dout: &ArrayD<f32>,
        scale: f32,
        q_offset: usize,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>, ArrayD<f32>)> {
        let (dq, dk, dv) = CPU.attention_backward(q, k, v, out, lse, dout, scale, q_offset)?;
        Ok((dq, self.off(Fault::AttentionBackward, dk), dv))
    }
    fn adamw_step(
        &self,
        p: &mut ArrayD<f32>,
        m: &mut ArrayD<f32>,
        v: &mut ArrayD<f32>,
        g: &ArrayD<f32>,
        h: &AdamWStep,
    ) -> Result<()> {
        CPU.adamw_step(p, m, v, g, h)?;
        if self.fault == Fault::AdamW {
            *p *= 1.001;
        }
        Ok(())
    }
    fn sum_squares(&self, t: &ArrayD<f32>) -> Result<f64> {
        let sq = CPU.sum_squares(t)?;
        Ok(if self.fault == Fault::SumSquares { sq * 1.001 } else { sq })
    }
    fn route_backward(
        &self,
        r: &Routing<Self>,
        dweights: &ArrayD<f32>,
        dscores: Option<&ArrayD<f32>>,
        spec: &RouteSpec,
    ) -> Result<ArrayD<f32>> {
        let r =
            Routing::<CpuBackend> { weights: r.weights.clone(), indices: r.indices.clone(), scores: r.scores.clone() };
        Ok(self.off(Fault::RouteBackward, CPU.route_backward(&r, dweights, dscores, spec)?))
    }
}
