//! Comparing balancing methods at matched balance (DeepSeek-V3 §4.5.3 sets the batch-wise
//! loss against the sequence-wise loss and aux-loss-free balancing; a fair comparison of
//! their quality holds the degree of balance fixed). The α of each auxiliary-loss variant
//! is searched on seed 0 until its MaxVio_global on validation (Wang et al. eq. 4) is as
//! close as it gets to the target variant's, averaged over seeds.
//!
//! MaxVio falls as α grows, roughly as a power of α, so the search works on log α and
//! log MaxVio: it steps by a factor of ten until the target is bracketed, then
//! interpolates between the two probes that bracket it.

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

/// The α to try next, given `(α, MaxVio)` of the probes so far (at least one).
pub fn next_alpha(probes: &[(f64, f64)], target: f64) -> f64 {
    // Most balanced probe still above the target, least balanced one at or below it.
    let above = probes.iter().filter(|p| p.1 > target).max_by(|a, b| a.0.total_cmp(&b.0));
    let below = probes.iter().filter(|p| p.1 <= target).min_by(|a, b| a.0.total_cmp(&b.0));
    match (above, below) {
        (Some(&(a_lo, v_lo)), Some(&(a_hi, v_hi))) if a_lo < a_hi && v_lo > v_hi => {
            let t = (v_lo.ln() - target.ln()) / (v_lo.ln() - v_hi.ln());
            (a_lo.ln() + t * (a_hi.ln() - a_lo.ln())).exp()
        }
        // Seed noise can break monotonicity: split the difference.
        (Some(&(a, _)), Some(&(b, _))) => (a * b).sqrt(),
        (Some(&(a, _)), None) => a * 10.0,
        (None, Some(&(a, _))) => a / 10.0,
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

    #[test]
    fn the_search_brackets_then_lands_on_a_power_law_target() {
        let target = power_law(0.037);
        let mut probes = vec![(1e-3, power_law(1e-3))];
        probes.push((next_alpha(&probes, target), 0.0));
        assert_eq!(probes[1].0, 1e-2, "above the target, α grows tenfold");
        probes[1].1 = power_law(probes[1].0);
        let third = next_alpha(&probes, target);
        assert_eq!(third, 1e-1, "still above: another tenfold step");
        probes.push((third, power_law(third)));
        let fourth = next_alpha(&probes, target);
        assert!((fourth / 0.037 - 1.0).abs() < 1e-9, "log-log interpolation is exact on a power law: {fourth}");
        probes.push((fourth, power_law(fourth)));
        assert_eq!(closest(&probes, target), 3);
    }

    #[test]
    fn too_balanced_steps_down_and_noise_splits_the_difference() {
        assert_eq!(next_alpha(&[(1e-3, 0.1)], 0.5), 1e-4);
        // A larger α that balanced worse: no bracket to interpolate, take the geometric mean.
        let alpha = next_alpha(&[(1e-3, 0.2), (1e-2, 0.9)], 0.5);
        assert!((alpha - 1e-2f64.sqrt() * 1e-3f64.sqrt()).abs() < 1e-12);
    }
}
