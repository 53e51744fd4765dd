//! Comparing balancing methods at matched balance (DeepSeek-V3 §4.5.3 sets the batch-wise
//! loss against the sequence-wise loss and aux-loss-free balancing; a fair comparison of
//! their quality holds the degree of balance fixed). The α of each auxiliary-loss variant
//! is searched on seed 0 until its MaxVio_global on validation (Wang et al. eq. 4) is as
//! close as it gets to the target variant's, averaged over seeds.
//!
//! MaxVio falls as α grows, so the search works on log α and log MaxVio: it steps by a
//! factor of √10 until the target is bracketed, then interpolates between the two probes
//! that bracket it. Interpolation is exact where MaxVio is a power of α, but the measured
//! curve is flat at small α and falls steeply past a threshold (small preset, seed 0:
//! MaxVio 2.80 at α = 1e-4, 2.70 at 2.5e-4, 0.89 at 1e-3): a step of 10 jumps over the
//! steep part into the flat one, and interpolation from the flat side moves slowly. So the
//! steps are √10, and each interpolated α stays within the middle half of the bracket (in
//! log α), which shrinks the bracket by at least a quarter per probe, as bisection would.

use crate::report::domain_mean;
use crate::run::{RunResult, Variant};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use v3lab_reference::balance::AuxLoss;

/// Which variant sets the balance and which variants' α is tuned to meet it.
#[derive(Debug, Clone)]
pub struct MatchBalance {
    pub target: &'static str,
    pub tuned: Vec<&'static str>,
}

/// One training run of the search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub variant: String,
    pub alpha: f32,
    pub max_vio_global: f64,
    /// Validation loss averaged over domains (nats per token).
    pub loss: f64,
    pub chosen: bool,
}

/// What the search did, saved in `results.json` and shown in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    pub target: String,
    /// The target variant's MaxVio_global, mean over seeds.
    pub target_max_vio: f64,
    pub seed: u64,
    pub probes: Vec<Probe>,
}

/// Trains the target variant with every seed, then searches each tuned variant's α with
/// `probes` runs on seed 0; sets the chosen α in `variants` and appends every run that
/// belongs to the study (the target's, and each tuned variant's chosen probe) to `results`.
pub fn calibrate(
    m: &MatchBalance,
    probes: usize,
    seeds: u64,
    variants: &mut [Variant],
    train: &mut dyn FnMut(&Variant, u64) -> Result<RunResult>,
    results: &mut Vec<RunResult>,
) -> Result<Calibration> {
    let index = |variants: &[Variant], name: &str| {
        variants.iter().position(|v| v.name == name).with_context(|| format!("the study has no variant {name}"))
    };
    let target = &variants[index(variants, m.target)?];
    let mut target_vios = Vec::new();
    for seed in 0..seeds {
        let run = train(target, seed)?;
        target_vios.push(run.max_vio_global);
        results.push(run);
    }
    // A MaxVio of exactly 0 has no logarithm; nothing trained here is that balanced.
    let floor = |v: f64| v.max(1e-6);
    let target_max_vio = target_vios.iter().sum::<f64>() / target_vios.len() as f64;
    let mut calibration = Calibration { target: m.target.into(), target_max_vio, seed: 0, probes: Vec::new() };
    for name in &m.tuned {
        let i = index(variants, name)?;
        if variants[i].balance.aux == AuxLoss::None {
            bail!("variant {name} has no auxiliary loss whose α could be tuned");
        }
        let mut tried: Vec<(f64, f64)> = Vec::new();
        let mut runs = Vec::new();
        let mut alpha = variants[i].balance.aux_alpha as f64;
        for _ in 0..probes {
            variants[i].balance.aux_alpha = alpha as f32;
            let run = train(&variants[i], calibration.seed)?;
            tried.push((alpha, floor(run.max_vio_global)));
            runs.push(run);
            alpha = next_alpha(&tried, floor(target_max_vio));
        }
        let best = closest(&tried, floor(target_max_vio));
        variants[i].balance.aux_alpha = tried[best].0 as f32;
        for (k, run) in runs.iter().enumerate() {
            calibration.probes.push(Probe {
                variant: name.to_string(),
                alpha: tried[k].0 as f32,
                max_vio_global: run.max_vio_global,
                loss: domain_mean(run, |d| d.loss),
                chosen: k == best,
            });
        }
        results.push(runs.swap_remove(best));
    }
    Ok(calibration)
}

/// How far α moves while the target is not yet bracketed.
const STEP: f64 = 3.162_277_660_168_379_5; // √10

/// The α to try next, given `(α, MaxVio)` of the probes so far (at least one).
pub fn next_alpha(probes: &[(f64, f64)], target: f64) -> f64 {
    // Most balanced probe still above the target, least balanced one at or below it.
    let above = probes.iter().filter(|p| p.1 > target).max_by(|a, b| a.0.total_cmp(&b.0));
    let below = probes.iter().filter(|p| p.1 <= target).min_by(|a, b| a.0.total_cmp(&b.0));
    match (above, below) {
        (Some(&(a_lo, v_lo)), Some(&(a_hi, v_hi))) if a_lo < a_hi && v_lo > v_hi => {
            let t = ((v_lo.ln() - target.ln()) / (v_lo.ln() - v_hi.ln())).clamp(0.25, 0.75);
            (a_lo.ln() + t * (a_hi.ln() - a_lo.ln())).exp()
        }
        // Seed noise can break monotonicity: split the difference.
        (Some(&(a, _)), Some(&(b, _))) => (a * b).sqrt(),
        (Some(&(a, _)), None) => a * STEP,
        (None, Some(&(a, _))) => a / STEP,
        (None, None) => unreachable!("next_alpha needs a probe"),
    }
}

/// Index of the probe whose MaxVio is closest to the target (on a log scale).
pub fn closest(probes: &[(f64, f64)], target: f64) -> usize {
    let distance = |p: &(f64, f64)| (p.1.ln() - target.ln()).abs();
    (0..probes.len()).min_by(|&i, &j| distance(&probes[i]).total_cmp(&distance(&probes[j]))).expect("a probe")
}

/// The report's section on the search.
pub fn section(c: &Calibration) -> String {
    let mut s = format!(
        "### Matching the balance\n\nEach auxiliary-loss variant's α was searched on seed {} so that its MaxVio_global \
         matches {}'s mean over seeds, {:.3}; the probe closest to it (✓) is that seed's run, and the other seeds \
         train with its α.\n\n| variant | α | MaxVio_global | validation loss | chosen |\n|---|---:|---:|---:|:-:|\n",
        c.seed, c.target, c.target_max_vio
    );
    for p in &c.probes {
        s += &format!(
            "| {} | {:.3e} | {:.3} | {:.4} | {} |\n",
            p.variant,
            p.alpha,
            p.max_vio_global,
            p.loss,
            if p.chosen { "✓" } else { "" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A power law MaxVio = c α^-p, as balance losses roughly give.
    fn power_law(alpha: f64) -> f64 {
        0.05 * alpha.powf(-0.4)
    }

    /// A threshold: no balance below α ≈ 4e-4, then a steep fall (the small preset's shape).
    fn threshold(alpha: f64) -> f64 {
        0.3 + 2.5 / (1.0 + (alpha / 4e-4).powi(4))
    }

    /// Runs the search for `probes` probes from α = 1e-3; returns the probes.
    fn run(curve: fn(f64) -> f64, target: f64, probes: usize) -> Vec<(f64, f64)> {
        let mut tried = vec![(1e-3, curve(1e-3))];
        while tried.len() < probes {
            let alpha = next_alpha(&tried, target);
            tried.push((alpha, curve(alpha)));
        }
        tried
    }

    #[test]
    fn the_search_brackets_then_lands_on_a_power_law_target() {
        let target = power_law(0.05);
        let tried = run(power_law, target, 6);
        let alphas: Vec<f64> = tried.iter().map(|p| p.0).collect();
        for (got, want) in alphas[..4].iter().zip([1e-3, 10f64.powf(-2.5), 1e-2, 10f64.powf(-1.5)]) {
            assert!((got / want - 1.0).abs() < 1e-9, "steps of √10 while above the target: {alphas:?}");
        }
        // Bracketed by 10^-1.5 and 10^-1: log-log interpolation is exact on a power law.
        assert!((alphas[5] / 0.05 - 1.0).abs() < 1e-9, "{alphas:?}");
        assert_eq!(closest(&tried, target), 5);
    }

    #[test]
    fn four_probes_match_a_threshold_curve_within_ten_percent() {
        let target = 1.8;
        let tried = run(threshold, target, 4);
        let best = tried[closest(&tried, target)];
        assert!((best.1 / target - 1.0).abs() < 0.1, "closest probe {best:?} of {tried:?}");
    }

    #[test]
    fn too_balanced_steps_down_and_noise_splits_the_difference() {
        assert!((next_alpha(&[(1e-3, 0.1)], 0.5) - 1e-3 / 10f64.sqrt()).abs() < 1e-15);
        // A larger α that balanced worse: no bracket to interpolate, take the geometric mean.
        let alpha = next_alpha(&[(1e-3, 0.2), (1e-2, 0.9)], 0.5);
        assert!((alpha - 1e-2f64.sqrt() * 1e-3f64.sqrt()).abs() < 1e-12);
    }
}
