//! Load balancing of the routed experts (DeepSeek-V3 §2.1.2, §4.5.2–4.5.3):
//! - auxiliary-loss-free balancing: a selection bias `b_i`, used only to choose experts,
//!   nudged after each step by `b_i ← b_i + γ·sign(mean load − load_i)` (§2.1.2, "Auxiliary-Loss-Free
//!   Load Balancing"; Wang et al. 2024);
//! - the complementary sequence-wise balance loss (eqs. 17–20) and its batch-wise variant
//!   (§4.5.3), with coefficient α;
//! - load statistics: per-block expert loads and MaxVio = (max load − mean load) / mean load
//!   (Wang et al. 2024, eq. 4), over one batch (MaxVio_batch) or accumulated loads
//!   (MaxVio_global).
//!
//! | eq. / rule | what | where |
//! |---|---|---|
//! | §2.1.2 | `b_i ← b_i + γ·sign(mean load − load_i)` | [`update_selection_bias`], [`update_model_biases`] |
//! | 17 | `L_Bal = α Σ f_i P_i` | [`balance_loss`] |
//! | 18 | `f_i = N_r/(K_r T) Σ_t 1(i chosen at t)` | [`balance_loss`], from [`expert_loads`] |
//! | 19, 20 | `s'_{i,t} = s_{i,t} / Σ_j s_{j,t}`, `P_i = (1/T) Σ_t s'_{i,t}` | [`balance_loss`] |
//! | Wang et al. eq. 4 | MaxVio | [`max_vio`], [`LoadTally`] |
//!
//! Everything here works on small host arrays (`[N, E]` scores, `[N, K]` indices) in f64;
//! the exact definitions are those of `../shared/goldens/README.md` (train-v3-tiny).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::params::{BlockParams, FfnParams};
use ndarray::{Array2, ArrayD, ArrayView2};

/// Which balance loss joins the objective (`train.json` `balance.aux`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuxLoss {
    /// No balance loss: balancing by the selection bias alone (DeepSeek-V3's choice).
    #[default]
    None,
    /// Per sequence, averaged over the sequences (eqs. 17–20).
    Sequence,
    /// The same sums over every token of the batch at once (§4.5.3).
    Batch,
}

/// Tokens routed to each expert: `load[e] = #{(n, k) : indices[n, k] = e}`.
pub fn expert_loads(indices: ArrayView2<'_, i64>, n_experts: usize) -> Vec<usize> {
    let mut load = vec![0; n_experts];
    for &e in indices.iter() {
        load[e as usize] += 1;
    }
    load
}

/// MaxVio = (max load − mean load) / mean load (Wang et al. 2024, eq. 4): 0 when perfectly
/// balanced; fed per-batch loads it is MaxVio_batch, fed loads summed over the whole run
/// (or validation set) it is MaxVio_global. 0 for no tokens.
pub fn max_vio(loads: &[usize]) -> f64 {
    let mean = loads.iter().sum::<usize>() as f64 / loads.len().max(1) as f64;
    let max = loads.iter().copied().max().unwrap_or(0) as f64;
    if mean == 0.0 {
        0.0
    } else {
        (max - mean) / mean
    }
}

/// Relative expert load (DeepSeek-V3 Figure 9 and Appendix C): each expert's load divided
/// by the perfectly balanced load (the mean), so 1 is balanced; per domain when fed the
/// loads of one domain's tokens. All zeros for no tokens.
pub fn relative_load(loads: &[usize]) -> Vec<f64> {
    let mean = loads.iter().sum::<usize>() as f64 / loads.len().max(1) as f64;
    loads.iter().map(|&l| if mean == 0.0 { 0.0 } else { l as f64 / mean }).collect()
}

/// Expert loads of every MoE block accumulated over many batches (a run, or a validation
/// set): MaxVio_global is [`max_vio`] of these sums, MaxVio_batch that of one batch's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadTally {
    /// Per MoE block (main blocks, then MTP blocks), tokens routed to each expert so far.
    pub loads: Vec<Vec<usize>>,
}

impl LoadTally {
    /// Adds one batch's per-block loads.
    pub fn add(&mut self, batch: &[Vec<usize>]) {
        if self.loads.len() < batch.len() {
            self.loads.resize(batch.len(), Vec::new());
        }
        for (acc, load) in self.loads.iter_mut().zip(batch) {
            if acc.len() < load.len() {
                acc.resize(load.len(), 0);
            }
            acc.iter_mut().zip(load).for_each(|(a, l)| *a += l);
        }
    }

    /// MaxVio_global of each block.
    pub fn max_vio_global(&self) -> Vec<f64> {
        self.loads.iter().map(|l| max_vio(l)).collect()
    }
}

/// The aux-loss-free update of one block's selection bias (§2.1.2): an overloaded expert
/// (`load_i` above the mean) loses γ, an underloaded one gains γ, one exactly at the
/// mean is left alone (`sign(0) = 0`, as `torch.sign`).
pub fn update_selection_bias(bias: &mut ArrayD<f32>, loads: &[usize], gamma: f32) {
    assert_eq!(bias.len(), loads.len(), "one load per expert");
    let mean = loads.iter().sum::<usize>() as f64 / loads.len() as f64;
    for (b, &load) in bias.iter_mut().zip(loads) {
        let diff = mean - load as f64;
        if diff > 0.0 {
            *b += gamma;
        } else if diff < 0.0 {
            *b -= gamma;
        }
    }
}

/// The MoE blocks of a model in the order of [`crate::train::objective::StepStats::loads`]:
/// the main blocks in order, then the MTP modules' blocks.
pub fn moe_blocks_mut<T>(params: &mut crate::Params<T>) -> impl Iterator<Item = &mut BlockParams<T>> {
    let (main, mtp) = (&mut params.layers, &mut params.mtp);
    main.iter_mut().chain(mtp.iter_mut().map(|m| &mut m.block)).filter(|b| matches!(b.ffn, FfnParams::Moe(_)))
}

/// Applies [`update_selection_bias`] to every MoE block of `params` (a model's weights on
/// backend `b`) that has a selection
/// bias, with `loads[g]` the loads of MoE block g in that block order (§2.1.2: after each
/// step, from the loads of that step's whole batch). Blocks beyond `loads` (an MTP module
/// the objective did not run) are left alone.
pub fn update_model_biases<B: Backend>(
    b: &B,
    params: &mut crate::Params<B::Tensor>,
    loads: &[Vec<usize>],
    gamma: f32,
) -> Result<()> {
    for (block, load) in moe_blocks_mut(params).zip(loads) {
        let FfnParams::Moe(moe) = &mut block.ffn else { unreachable!("filtered to MoE blocks") };
        if let Some(bias) = &mut moe.gate_bias {
            let mut host = b.download(bias)?;
            if host.len() != load.len() {
                return Err(Error::Input(format!("{} loads for {} experts", load.len(), host.len())));
            }
            update_selection_bias(&mut host, load, gamma);
            *bias = b.upload(host.view())?;
        }
    }
    Ok(())
}

/// The balance loss of one MoE block and its gradient with respect to the unbiased scores.
///
/// `scores [N, E]` are the gate's unbiased affinities `s_{t,i}` (eq. 15 without bias),
/// `indices [N, K]` the experts the forward chose (bias included), tokens flattened
/// sequence-major with `seq_len` tokens per sequence. Per group of tokens (one sequence for
/// `Sequence`, the whole batch for `Batch`) of T tokens:
/// - `s'_{t,i} = s_{t,i} / Σ_j s_{t,j}` (eq. 19),
/// - `f_i = E / (K·T) · #{t : i chosen for t}` (eq. 18; a constant of the loss),
/// - `P_i = 1/T · Σ_t s'_{t,i}` (eq. 20),
/// - `L = α Σ_i f_i P_i` (eq. 17),
///
/// averaged over the groups. Returns `(L, dL/ds [N, E])`.
pub fn balance_loss(
    scores: ArrayView2<'_, f64>,
    indices: ArrayView2<'_, i64>,
    seq_len: usize,
    scope: AuxLoss,
    alpha: f64,
) -> (f64, Array2<f64>) {
    let (n, n_experts) = scores.dim();
    let top_k = indices.ncols();
    let mut grad = Array2::zeros((n, n_experts));
    let group = match scope {
        AuxLoss::None => return (0.0, grad),
        AuxLoss::Sequence => seq_len,
        AuxLoss::Batch => n,
    };
    assert!(group > 0 && n % group == 0, "{n} tokens in groups of {group}");
    let groups = n / group;
    let mut loss = 0.0;
    for g in 0..groups {
        let rows = g * group..(g + 1) * group;
        let t = group as f64;
        let counts = expert_loads(indices.slice(ndarray::s![rows.clone(), ..]), n_experts);
        let f: Vec<f64> = counts.iter().map(|&c| n_experts as f64 / (top_k as f64 * t) * c as f64).collect();
        for row in rows {
            let s = scores.row(row);
            let sum: f64 = s.sum();
            // dL/ds'_{t,i} = α f_i / (T · groups); through s' = s / Σ s:
            // dL/ds_{t,j} = (dL/ds'_{t,j} − Σ_i dL/ds'_{t,i} s'_{t,i}) / Σ s.
            let d_norm: Vec<f64> = f.iter().map(|fi| alpha * fi / (t * groups as f64)).collect();
            let mut dot = 0.0;
            for i in 0..n_experts {
                let p = s[i] / sum;
                loss += d_norm[i] * p;
                dot += d_norm[i] * p;
            }
            for j in 0..n_experts {
                grad[[row, j]] = (d_norm[j] - dot) / sum;
            }
        }
    }
    (loss, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};
    use proptest::prelude::*;

    #[test]
    fn bias_moves_against_the_load() {
        let mut bias = Array1::from(vec![0.0f32, 0.5, -0.5, 0.25]).into_dyn();
        update_selection_bias(&mut bias, &[4, 2, 1, 1], 0.125);
        // mean 2: expert 0 over, expert 1 at the mean, 2 and 3 under.
        assert_eq!(bias.as_slice().unwrap(), &[-0.125, 0.5, -0.375, 0.375]);
    }

    #[test]
    fn max_vio_of_known_loads() {
        assert_eq!(max_vio(&[2, 2, 2, 2]), 0.0);
        assert_eq!(max_vio(&[4, 2, 1, 1]), 1.0);
        assert_eq!(max_vio(&[0, 0]), 0.0);
        assert_eq!(relative_load(&[4, 2, 1, 1]), vec![2.0, 1.0, 0.5, 0.5]);
    }

    #[test]
    fn global_max_vio_sums_batches() {
        // Each batch is unbalanced (MaxVio_batch 1), their sum is perfectly balanced.
        let mut tally = LoadTally::default();
        tally.add(&[vec![2, 0]]);
        tally.add(&[vec![0, 2]]);
        assert_eq!(max_vio(&[2, 0]), 1.0);
        assert_eq!(tally.loads, vec![vec![2, 2]]);
        assert_eq!(tally.max_vio_global(), vec![0.0]);
    }

    #[test]
    fn uniform_routing_gives_alpha() {
        // Every expert chosen equally often and equal scores: f_i = 1, P_i = 1/E, L = α.
        let scores = Array2::from_elem((4, 4), 0.3);
        let indices = array![[0i64, 1], [2, 3], [0, 1], [2, 3]];
        for scope in [AuxLoss::Sequence, AuxLoss::Batch] {
            let (loss, _) = balance_loss(scores.view(), indices.view(), 2, scope, 0.01);
            assert!((loss - 0.01).abs() < 1e-15, "{scope:?}: {loss}");
        }
    }

    proptest! {
        /// Central differences in f64 of the loss (counts held fixed, as in the definition).
        #[test]
        fn gradient_matches_finite_differences(seed in 0u64..500, seqs in 1usize..4, seq_len in 1usize..5,
                                               batch in any::<bool>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (n, e, k) = (seqs * seq_len, 6, 2);
            let scores = Array2::from_shape_fn((n, e), |_| rng.random_range(0.05f64..0.95));
            let indices = Array2::from_shape_fn((n, k), |(_, j)| (j * 3 + rng.random_range(0..3)) as i64);
            let scope = if batch { AuxLoss::Batch } else { AuxLoss::Sequence };
            let (_, grad) = balance_loss(scores.view(), indices.view(), seq_len, scope, 0.1);
            for ((r, c), &g) in grad.indexed_iter() {
                let mut plus = scores.clone();
                plus[[r, c]] += FD_STEP;
                let mut minus = scores.clone();
                minus[[r, c]] -= FD_STEP;
                let fd = (balance_loss(plus.view(), indices.view(), seq_len, scope, 0.1).0
                    - balance_loss(minus.view(), indices.view(), seq_len, scope, 0.1).0) / (2.0 * FD_STEP);
                prop_assert!((fd - g).abs() <= FD_TOL * (1.0 + g.abs()), "[{r}, {c}]: {fd} vs {g}");
            }
        }
    }

    /// Central-difference step in f64: truncation error ~h² ≈ 1e-12, rounding ~1e-16/h ≈ 1e-10.
    const FD_STEP: f64 = 1e-6;
    /// Above both error terms of a central difference in f64 with `FD_STEP`.
    const FD_TOL: f64 = 1e-7;
}
