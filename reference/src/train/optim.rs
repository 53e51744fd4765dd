//! AdamW with decoupled weight decay and global-norm gradient clipping (DeepSeek-V3 §4.2,
//! "Hyper-Parameters": AdamW β1 = 0.9, β2 = 0.95, weight_decay = 0.1, gradient clipping
//! norm 1.0), as `torch.nn.utils.clip_grad_norm_` followed by `torch.optim.AdamW`.
//!
//! Weight decay reaches the 2-D weights only ([`ParamKind::Matrix`]); norm gains are
//! updated without it; the gate's selection bias ([`ParamKind::SelectionBias`]) has no
//! gradient and is never touched here (§2.1.2: it moves by the balancing rule alone).
//! The element-wise update is the backend primitive [`OptimOps::adamw_step`](crate::backend::OptimOps::adamw_step).

use crate::backend::{AdamWStep, Backend};
use crate::error::{Error, Result};
use crate::params::{ParamKind, Params};

/// The hyper-parameters that stay fixed during a run (the learning rate comes from the schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to [`ParamKind::Matrix`] leaves only.
    pub weight_decay: f32,
}

/// First and second moments of one trained leaf.
#[derive(Debug, Clone)]
pub struct Moments<T> {
    /// The leaf's released name (`model.layers.0.self_attn.q_a_proj.weight`).
    pub name: String,
    /// `exp_avg`.
    pub m: T,
    /// `exp_avg_sq`.
    pub v: T,
}

/// AdamW's state: the update count and the moments of every trained leaf, in the order of
/// [`Params::leaves`] with the selection biases left out.
#[derive(Debug, Clone)]
pub struct AdamW<T> {
    pub config: AdamWConfig,
    /// Updates done so far (torch's `state["step"]`, the same for every leaf).
    pub step: u64,
    pub moments: Vec<Moments<T>>,
}

/// The global gradient norm before clipping, `sqrt(Σ_tensors Σ g²)` in f64. A non-finite
/// gradient is an error naming the first tensor that holds one.
pub fn global_grad_norm<B: Backend>(b: &B, grads: &Params<B::Tensor>) -> Result<f64> {
    let mut total = 0.0;
    for (name, kind, g) in grads.leaves() {
        if kind == ParamKind::SelectionBias {
            continue;
        }
        let sq = b.sum_squares(g)?;
        if !sq.is_finite() {
            return Err(Error::Input(format!("non-finite gradient in tensor `{name}`")));
        }
        total += sq;
    }
    Ok(total.sqrt())
}

/// The factor `clip_grad_norm_` multiplies every gradient by: `min(1, max_norm / (norm + 1e-6))`
/// (computed in f64, applied in f32). `max_norm ≤ 0` turns clipping off.
pub fn clip_coefficient(norm: f64, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (f64::from(max_norm) / (norm + 1e-6)).min(1.0) as f32
}

impl<T: Clone> AdamW<T> {
    /// Zero moments for every trained leaf of `params`.
    pub fn new<B: Backend<Tensor = T>>(b: &B, config: AdamWConfig, params: &Params<T>) -> Result<Self> {
        let mut moments = Vec::new();
        for (name, kind, p) in params.leaves() {
            if kind != ParamKind::SelectionBias {
                let shape = b.shape(p);
                moments.push(Moments { name, m: b.zeros(&shape)?, v: b.zeros(&shape)? });
            }
        }
        Ok(AdamW { config, step: 0, moments })
    }

    /// One update of every trained leaf of `params` with `grads` (mirroring `params`),
    /// multiplied by `grad_scale` first (the clipping coefficient), at learning rate `lr`.
    pub fn update<B: Backend<Tensor = T>>(
        &mut self,
        b: &B,
        params: &mut Params<T>,
        grads: &Params<T>,
        lr: f32,
        grad_scale: f32,
    ) -> Result<()> {
        let grads = grads.leaves();
        self.step += 1;
        let (step, c) = (self.step, self.config);
        let mut slots = self.moments.iter_mut();
        let mut index = 0;
        let updated = params.try_map(|name, kind, p| -> Result<T> {
            let (grad_name, _, grad) =
                grads.get(index).ok_or_else(|| Error::Input(format!("no gradient for tensor `{name}`")))?;
            index += 1;
            if grad_name != name {
                return Err(Error::Input(format!("gradient `{grad_name}` where `{name}` was expected")));
            }
            if kind == ParamKind::SelectionBias {
                return Ok(p.clone());
            }
            let slot = slots.next().filter(|s| s.name == name).ok_or_else(|| {
                Error::Input(format!("optimizer state has no moments for tensor `{name}` (model changed?)"))
            })?;
            let weight_decay = if kind == ParamKind::Matrix { c.weight_decay } else { 0.0 };
            let h = AdamWStep { lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay, step, grad_scale };
            let mut p = p.clone();
            b.adamw_step(&mut p, &mut slot.m, &mut slot.v, grad, &h)?;
            Ok(p)
        })?;
        if index != grads.len() || slots.next().is_some() {
            return Err(Error::Input("gradients or optimizer state do not mirror the parameters".into()));
        }
        *params = updated;
        Ok(())
    }
}
