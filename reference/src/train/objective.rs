//! The training objective of DeepSeek-V3 and its gradient:
//! `total = L_main + λ · L_MTP + L_bal` with
//! - `L_main`: mean next-token cross-entropy of the main model, `logits[:, :-1]` against
//!   `tokens[:, 1:]`;
//! - `L_MTP = 1/D Σ_k L^k` (eq. 25), each `L^k` the cross-entropy of MTP module k against
//!   `t_{i+k+1}` (see [`crate::mtp`]);
//! - `L_bal`: the sequence-wise (eqs. 17–20) or batch-wise (§4.5.3) balance loss of every
//!   MoE block, main blocks then MTP blocks, summed over the blocks (see [`crate::balance`]).
//!
//! One forward keeps every activation; the backward can then be seeded with any weights of
//! the three terms: (1, λ, 1) for training, one term at a time for the goldens' per-term
//! gradients (`grad.main`, `grad.mtp` unscaled by λ, `grad.aux`).

use crate::backend::Backend;
pub use crate::balance::AuxLoss;
use crate::balance::{balance_loss, expert_loads};
use crate::error::{Error, Result};
use crate::model::train::ModelSaved;
use crate::model::Transformer;
use crate::mtp::{self, MtpSaved};
use crate::params::Params;

/// What to optimise (`train.json`: `mtp_depth`, `mtp_lambda`, `balance.aux`, `balance.aux_alpha`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// D: how many MTP modules run (at most the model's); 0 drops the MTP term.
    pub mtp_depth: usize,
    /// λ (§4.2: 0.3 for the first 10T tokens, 0.1 after).
    pub mtp_lambda: f32,
    pub aux: AuxLoss,
    /// α of the balance loss (§4.2: 0.0001 for DeepSeek-V3).
    pub aux_alpha: f32,
}

/// The loss terms at the weights before the update.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Losses {
    pub total: f32,
    pub main: f32,
    /// `1/D Σ_k L^k` (unscaled by λ; 0 when D = 0).
    pub mtp: f32,
    /// The balance loss summed over the MoE blocks (α included; 0 when off).
    pub aux: f32,
}

/// Statistics of one forward.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepStats {
    /// Per MoE block (main blocks in order, then the MTP modules' blocks), how many of the
    /// batch's tokens were routed to each expert.
    pub loads: Vec<Vec<usize>>,
}

/// Each term's gradient separately, at the same weights.
#[derive(Debug, Clone)]
pub struct TermGrads<T> {
    pub main: Params<T>,
    /// Gradient of `L_MTP` itself (not multiplied by λ).
    pub mtp: Params<T>,
    pub aux: Params<T>,
}

/// One forward of the whole objective, with what its backward needs.
pub struct Pass<B: Backend> {
    pub losses: Losses,
    /// The total in the backend's precision, widened to f64 (what the finite-difference
    /// checks differentiate with `CpuBackendF64`).
    pub total: f64,
    pub stats: StepStats,
    /// The main model's logits `[B, S, V]`.
    pub logits: B::Tensor,
    /// Each MTP module's logits, `[B, S − k, V]` for depth k.
    pub mtp_logits: Vec<B::Tensor>,
    main: ModelSaved<B>,
    mtp: Vec<MtpSaved<B>>,
    /// Targets and log-sum-exps of the main and each MTP cross-entropy.
    ce: Vec<(B::Indices, B::Tensor)>,
    /// Per MoE block, ∂L_bal/∂scores `[N, E]` (None when the balance loss is off).
    d_scores: Vec<Option<B::Tensor>>,
}

/// `logits [B, L, V]` on the first `n` positions, flattened `[B·n, V]`.
fn first_positions<B: Backend>(b: &B, logits: &B::Tensor, n: usize) -> Result<B::Tensor> {
    let [bsz, _, vocab] = b.shape(logits)[..] else { unreachable!("logits are [B, L, V]") };
    b.reshape(&b.narrow(logits, 1, 0, n)?, &[bsz * n, vocab])
}

/// Runs the forward of every term. The tokens must have at least `mtp_depth + 2` positions.
pub fn forward<B: Backend>(b: &B, model: &Transformer<B>, tokens: &B::Indices, obj: &Objective) -> Result<Pass<B>> {
    let seq = b.indices_shape(tokens).get(1).copied().unwrap_or(0);
    if seq < obj.mtp_depth + 2 {
        return Err(Error::Input(format!(
            "{seq} positions: MTP depth {} needs at least {}",
            obj.mtp_depth,
            obj.mtp_depth + 2
        )));
    }
    if obj.mtp_depth > model.params.mtp.len() {
        return Err(Error::Input(format!(
            "MTP depth {} but the model has {} modules",
            obj.mtp_depth,
            model.params.mtp.len()
        )));
    }
    let (logits, main) = model.forward_train(b, tokens)?;
    let targets = mtp::token_window(b, tokens, 1, seq - 1)?;
    let (main_loss, lse) = b.cross_entropy_forward(&first_positions(b, &logits, seq - 1)?, &targets)?;
    let mut ce = vec![(targets, lse)];

    let (mut mtp_saved, mut mtp_logits, mut mtp_loss) = (Vec::new(), Vec::new(), 0.0);
    let mut h = main.final_hidden.clone();
    for k in 1..=obj.mtp_depth {
        let (lk, saved) = mtp::forward_train(b, model, k, tokens, &h)?;
        let n = seq - k - 1;
        let targets = mtp::token_window(b, tokens, k + 1, n)?;
        let (loss, lse) = b.cross_entropy_forward(&first_positions(b, &lk, n)?, &targets)?;
        mtp_loss += loss / obj.mtp_depth as f64;
        ce.push((targets, lse));
        h = saved.hidden.clone();
        mtp_saved.push(saved);
        mtp_logits.push(lk);
    }

    // Loads and the balance loss of every MoE block: main blocks (sequences of S tokens),
    // then MTP module k's block (sequences of S − k tokens).
    let blocks = (main.blocks.iter().map(|s| (s, seq))).chain(mtp_saved.iter().map(|m| (&m.block, seq - m.depth)));
    let (mut loads, mut d_scores, mut aux) = (Vec::new(), Vec::new(), 0.0);
    for (saved, seq_len) in blocks {
        let Some(routing) = saved.routing() else {
            d_scores.push(None);
            continue;
        };
        let indices = b
            .download_indices(&routing.indices)?
            .into_dimensionality()
            .map_err(|_| Error::shape("loads", "indices"))?;
        loads.push(expert_loads(indices.view(), model.cfg.n_routed_experts));
        if obj.aux == AuxLoss::None {
            d_scores.push(None);
            continue;
        }
        let scores =
            b.download_f64(&routing.scores)?.into_dimensionality().map_err(|_| Error::shape("aux", "scores"))?;
        let (loss, grad) = balance_loss(scores.view(), indices.view(), seq_len, obj.aux, f64::from(obj.aux_alpha));
        aux += loss;
        d_scores.push(Some(b.upload_f64(grad.into_dyn().view())?));
    }
    let total = main_loss + f64::from(obj.mtp_lambda) * mtp_loss + aux;
    let losses = Losses { total: total as f32, main: main_loss as f32, mtp: mtp_loss as f32, aux: aux as f32 };
    Ok(Pass { losses, total, stats: StepStats { loads }, logits, mtp_logits, main, mtp: mtp_saved, ce, d_scores })
}

/// The gradient of `w_main · L_main + w_mtp · L_MTP + w_aux · L_bal` from one [`forward`].
pub fn backward<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    pass: &Pass<B>,
    [w_main, w_mtp, w_aux]: [f32; 3],
) -> Result<Params<B::Tensor>> {
    let depth = pass.mtp.len();
    // dL/dlogits of a cross-entropy over the first n positions of `logits [B, L, V]`.
    let ce_grad = |logits: &B::Tensor, (targets, lse): &(B::Indices, B::Tensor), w: f32| -> Result<B::Tensor> {
        let [bsz, len, vocab] = b.shape(logits)[..] else { unreachable!("logits are [B, L, V]") };
        let n = b.shape(lse)[0] / bsz;
        let rows = first_positions(b, logits, n)?;
        let d_rows = b.reshape(&b.cross_entropy_backward(&rows, lse, targets, w)?, &[bsz, n, vocab])?;
        b.concat(&[&d_rows, &b.zeros(&[bsz, len - n, vocab])?], 1)
    };
    let d_scores: Vec<Option<B::Tensor>> =
        pass.d_scores.iter().map(|d| d.as_ref().map(|d| b.scale(d, w_aux)).transpose()).collect::<Result<_>>()?;
    let n_main = pass.main.blocks.len();

    // MTP modules from the deepest down: each hands d h^{k−1} to the one before.
    let (mut d_h, mut d_mtp) = (None, Vec::with_capacity(depth));
    let (mut d_shared_embed, mut d_shared_head) = (None::<B::Tensor>, None::<B::Tensor>);
    for (k, saved) in pass.mtp.iter().enumerate().rev() {
        let d_logits = ce_grad(&pass.mtp_logits[k], &pass.ce[k + 1], w_mtp / depth as f32)?;
        let d_scores = d_scores.get(n_main + k).and_then(Option::as_ref);
        let g = mtp::backward(b, model, &d_logits, d_h.as_ref(), saved, d_scores)?;
        let add = |acc: Option<B::Tensor>, x: Option<B::Tensor>| -> Result<Option<B::Tensor>> {
            Ok(match (acc, x) {
                (Some(a), Some(x)) => Some(b.add(&a, &x)?),
                (a, x) => a.or(x),
            })
        };
        d_shared_embed = add(d_shared_embed, g.shared_embed)?;
        d_shared_head = add(d_shared_head, g.shared_head)?;
        d_h = Some(g.d_h_prev);
        d_mtp.push(g.params);
    }
    d_mtp.reverse();

    let d_logits = ce_grad(&pass.logits, &pass.ce[0], w_main)?;
    let mut grads = model.backward(b, &d_logits, d_h.as_ref(), &pass.main, &d_scores[..n_main.min(d_scores.len())])?;
    if let Some(e) = d_shared_embed {
        grads.embed = b.add(&grads.embed, &e)?;
    }
    if let Some(h) = d_shared_head {
        grads.head = b.add(&grads.head, &h)?;
    }
    // Modules the objective did not run get zero gradients (the tree mirrors Params).
    if depth < model.params.mtp.len() {
        let zeros = model.params.try_map(|_, _, t| b.zeros(&b.shape(t)))?;
        d_mtp.extend(zeros.mtp.into_iter().skip(depth));
    }
    grads.mtp = d_mtp;
    Ok(grads)
}

/// The loss terms, the gradient of the total and the step's loads: what a training step
/// needs (see the module doc for the terms).
pub fn loss_and_grads<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    tokens: &B::Indices,
    obj: &Objective,
) -> Result<(Losses, Params<B::Tensor>, StepStats)> {
    let pass = forward(b, model, tokens, obj)?;
    let grads = backward(b, model, &pass, [1.0, obj.mtp_lambda, 1.0])?;
    Ok((pass.losses, grads, pass.stats))
}

/// Each term's gradient separately (one forward, three backwards): what the goldens'
/// `grad.main`, `grad.mtp` (unscaled by λ) and `grad.aux` hold.
pub fn grads_by_term<B: Backend>(
    b: &B,
    model: &Transformer<B>,
    tokens: &B::Indices,
    obj: &Objective,
) -> Result<(Losses, TermGrads<B::Tensor>, StepStats)> {
    let pass = forward(b, model, tokens, obj)?;
    let grads = TermGrads {
        main: backward(b, model, &pass, [1.0, 0.0, 0.0])?,
        mtp: backward(b, model, &pass, [0.0, 1.0, 0.0])?,
        aux: backward(b, model, &pass, [0.0, 0.0, 1.0])?,
    };
    Ok((pass.losses, grads, pass.stats))
}

/// `−log softmax(logits)[target]` of one row of logits, in f64: the host-side next-token
/// loss that validation and the studies evaluate (the training loss itself runs on the
/// backend through `Backend::cross_entropy_forward`).
pub fn token_nll<D: ndarray::Dimension>(logits: ndarray::ArrayView<'_, f32, D>, target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
    let lse = max + logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    lse - logits.iter().nth(target).copied().expect("the target indexes the row") as f64
}
