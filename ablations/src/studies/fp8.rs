//! `ablate-fp8` (DeepSeek-V3 §3.3, Figure 10; Appendix B): the same model trained with its
//! linear layers in f32, in BF16 (the paper's baseline), in the paper's FP8 recipe, and in
//! the recipe with one choice undone each: the H100's accumulator without promotion (with
//! per-tensor scales, as cuBLAS runs `torch._scaled_mm` with fast accumulation), per-tensor
//! scaling, and 128×128 blocks for the activation gradients (Appendix B.2).
//!
//! Every variant of a seed starts from the same weights and sees the same batches, so the
//! gap between two variants' training losses at a step is the effect of the precision
//! alone; the report gives it relative to BF16, as Figure 10 does.

use super::V3_BALANCE;
use crate::figures::{loss_curves, max_vio_curves, smoothed_train_loss};
use crate::report::{domain_mean, per_domain_table, significance, stat, table, Column, Significance, Stat};
use crate::run::{RunResult, Variant};
use crate::study::Study;
use anyhow::Result;
use std::path::Path;
use v3lab_reference::plot::{Figure, Lines, Panel, Scale, Series};
use v3lab_reference::train::config::{Fp8Options, GemmPrecision};

/// The paper's bound on FP8's relative loss error against BF16 (§3.3, Figure 10).
pub const PAPER_GAP: f64 = 0.0025;

/// The baseline every gap is measured against.
const BASELINE: &str = "bf16";

fn variant(name: &str, precision: GemmPrecision, fp8: Option<Fp8Options>) -> Variant {
    Variant { precision, fp8, ..Variant::f32(name, 0, vec![(0.0, 0.0)], V3_BALANCE) }
}

fn fp8(change: impl FnOnce(&mut Fp8Options)) -> Option<Fp8Options> {
    let mut options = Fp8Options::default();
    change(&mut options);
    Some(options)
}

pub fn study() -> Study {
    Study {
        name: "ablate-fp8",
        title: "FP8 mixed-precision training (DeepSeek-V3 §3.3, Figure 10; Appendix B)",
        variants: vec![
            variant("f32", GemmPrecision::F32, None),
            variant(BASELINE, GemmPrecision::Bf16, None),
            variant("fp8", GemmPrecision::Fp8, None),
            variant(
                "fp8-h100-no-promotion",
                GemmPrecision::Fp8,
                fp8(|o| {
                    o.accumulator = "h100".into();
                    o.scaling = "tensor".into();
                }),
            ),
            variant("fp8-tensor-scaling", GemmPrecision::Fp8, fp8(|o| o.scaling = "tensor".into())),
            variant("fp8-gradient-blocks", GemmPrecision::Fp8, fp8(|o| o.gradient_blocks = true)),
        ],
        paper: PAPER,
        analyse,
        figures: |out, results, names| {
            Ok(vec![
                gap_curves(out, results, names)?,
                loss_curves(out, results, names)?,
                max_vio_curves(out, results, names)?,
            ])
        },
        match_balance: None,
    }
}

const PAPER: &str = "§3.3 / Figure 10: \"Compared with the BF16 baseline, the relative loss error of our FP8-training \
model remains consistently below 0.25%\", for a 16B and a 230B DeepSeek-V2-like MoE trained on about 1T tokens \
(Appendix B.1). The recipe (§3.3.1–3.3.3): Fprop, Dgrad and Wgrad in E4M3; activations scaled per 1×128 tile, \
weights per 128×128 block; partial sums promoted to FP32 every N_C = 128 elements of K; the attention-output \
linear's input in a customised E5M6 with power-of-two scales; embedding, output head, MoE gating, normalisation and \
attention in BF16/FP32.\n\n\
§3.3.2: on the H800 \"the accumulation precision of FP8 GEMM on NVIDIA H800 GPUs is limited to retaining around 14 \
bits\"; without promotion \"the maximum relative error is nearly 2%\" for K = 4096. Per-tensor scaling \"makes \
low-precision training highly sensitive to activation outliers\", which the fine-grained scaling addresses.\n\n\
Appendix B.2: with 128×128 block-wise quantization of the activation gradients (the Dgrad input), \"a 16B DeepSeek-V2 \
model trained on approximately 300B tokens\" diverges; 1×128 tiles for them do not.";

/// Steps averaged in the gap curves and the tail statistics (as the loss curves do).
fn window(steps: usize) -> usize {
    (steps / 20).clamp(1, 100)
}

/// The relative gap `(L_variant − L_bf16) / L_bf16` of the smoothed training loss, step by
/// step, for one seed (None without a BF16 run of that seed).
fn gap_curve(results: &[RunResult], run: &RunResult) -> Option<Vec<(f64, f64)>> {
    let base = results.iter().find(|r| r.variant == BASELINE && r.seed == run.seed)?;
    let w = window(run.steps);
    let (mine, theirs) = (smoothed_train_loss(run, w), smoothed_train_loss(base, w));
    Some(mine.iter().zip(&theirs).map(|(&(x, l), &(_, b))| (x, (l - b) / b)).collect())
}

/// The mean gap over the last tenth of training (one run).
fn final_gap(results: &[RunResult], run: &RunResult) -> Option<f64> {
    let curve = gap_curve(results, run)?;
    let tail = &curve[curve.len() - (curve.len() / 10).max(1)..];
    Some(tail.iter().map(|p| p.1).sum::<f64>() / tail.len() as f64)
}

/// The largest |gap| over the second half of training (one run): the paper's
/// "consistently below", after the first steps' transient.
fn worst_gap(results: &[RunResult], run: &RunResult) -> Option<f64> {
    let curve = gap_curve(results, run)?;
    curve[curve.len() / 2..].iter().map(|p| p.1.abs()).reduce(f64::max)
}

/// The relative gap of the final validation loss (mean over domains) to BF16's, same seed.
fn validation_gap(results: &[RunResult], run: &RunResult) -> Option<f64> {
    let base = results.iter().find(|r| r.variant == BASELINE && r.seed == run.seed)?;
    let (l, b) = (domain_mean(run, |d| d.loss), domain_mean(base, |d| d.loss));
    Some((l - b) / b)
}

fn percent(s: Option<Stat>) -> String {
    s.map_or("not measured".into(), |s| format!("{:+.3}% ± {:.3}%", 100.0 * s.mean, 100.0 * s.std))
}

/// The spread a precision change must exceed to be seen: how far apart two seeds of the
/// baseline end (the relative difference of their final smoothed training losses).
fn seed_spread(results: &[RunResult]) -> Option<f64> {
    let finals: Vec<f64> = results
        .iter()
        .filter(|r| r.variant == BASELINE)
        .filter_map(|r| smoothed_train_loss(r, window(r.steps)).last().map(|p| p.1))
        .collect();
    let stat = Stat::of(&finals)?;
    (stat.n > 1).then(|| stat.std / stat.mean)
}

fn analyse(results: &[RunResult], names: &[String]) -> String {
    let mut s = String::from("### Validation loss (nats per token)\n\n");
    s += &per_domain_table(results, names, |d| d.loss, 4);
    s += "\n### Relative loss gap to BF16 (Figure 10)\n\n";
    let final_gap = |r: &RunResult| final_gap(results, r).map(|g| 100.0 * g);
    let worst_gap = |r: &RunResult| worst_gap(results, r).map(|g| 100.0 * g);
    let validation_gap = |r: &RunResult| validation_gap(results, r).map(|g| 100.0 * g);
    let columns: [Column; 3] = [
        ("training loss gap, last 10% of steps (%)", 3, &final_gap),
        ("largest |gap|, second half (%)", 3, &worst_gap),
        ("validation loss gap (%)", 3, &validation_gap),
    ];
    s += &table(results, names, &columns);
    s += "\n### Balance under each precision\n\n";
    let columns: [Column; 2] = [
        ("MaxVio_global (validation)", 3, &|r| Some(r.max_vio_global)),
        ("MaxVio_batch (last 10% of steps)", 3, &|r| Some(super::aux_free::last_tenth_max_vio(r))),
    ];
    s += &table(results, names, &columns);
    s += "\n### Reading\n\n";
    for line in verdicts(results) {
        s += &format!("- {line}\n");
    }
    s
}

/// One sentence per claim of the paper, with our numbers and whether they agree.
fn verdicts(results: &[RunResult]) -> Vec<String> {
    let worst = |v: &str| stat(results, v, |r| worst_gap(results, r));
    let final_ = |v: &str| stat(results, v, |r| final_gap(results, r).map(f64::abs));
    let spread = seed_spread(results);
    let spread_text = spread.map_or("one seed only".into(), |x| format!("{:.3}%", 100.0 * x));
    let mut lines = Vec::new();

    // Runs from the same weights on the same batches still drift apart (routing is discrete:
    // a rounding difference flips an expert choice, and the trajectories separate), so
    // f32 against BF16, a change far smaller than FP8's, measures how finely this scale can
    // resolve a gap at all.
    let floor = worst("f32");
    lines.push(match (worst("fp8"), floor) {
        (Some(w), floor) => {
            let verdict = if w.mean + w.std < PAPER_GAP {
                "holds at this scale".to_string()
            } else if let Some(f) = floor.filter(|f| w.mean <= f.mean + 2.0 * f.std.max(w.std)) {
                format!(
                    "cannot be resolved at this scale: f32 and BF16 themselves drift {:.3}% ± {:.3}% apart over the \
                     same steps, and FP8's gap is no larger",
                    100.0 * f.mean,
                    100.0 * f.std
                )
            } else {
                "does not hold at this scale (and the gap exceeds f32's own drift from BF16)".to_string()
            };
            format!(
                "FP8 recipe vs BF16 (paper: relative loss error consistently below 0.25%): the largest gap over the \
                 second half of training is {:.3}% ± {:.3}% (seed-to-seed spread of the BF16 runs: {spread_text}); the \
                 claim {verdict}.",
                100.0 * w.mean,
                100.0 * w.std,
            )
        }
        (None, _) => "FP8 recipe vs BF16: not measured.".into(),
    });
    lines.push(format!(
        "BF16 vs f32 (the baseline is faithful): final training-loss gap of f32 to BF16 {}.",
        percent(stat(results, "f32", |r| final_gap(results, r)))
    ));
    // Each undone choice should widen the gap to BF16 (the paper's reason for the choice).
    let claims = [
        (
            "fp8-h100-no-promotion",
            "Promotion to FP32 every 128 (§3.3.2: without it the H800's ~14-bit accumulation errs by up to 2% at K = 4096)",
        ),
        ("fp8-tensor-scaling", "Fine-grained scaling (§3.3.2: per-tensor scales are sensitive to outliers)"),
        ("fp8-gradient-blocks", "1×128 tiles for activation gradients (Appendix B.2: 128×128 blocks diverge at 16B, 300B tokens)"),
    ];
    for (name, claim) in claims {
        let (Some(undone), Some(kept)) = (final_(name), final_("fp8")) else {
            lines.push(format!("{claim}: not measured (`{name}` was not trained: name it in `--only`)."));
            continue;
        };
        let (diff, noise) = undone.minus(&kept);
        let verdict = match significance(diff, noise, undone.n) {
            Significance::OneSeed => "one seed only, so no verdict",
            Significance::Agrees => "agrees with the paper (undoing the choice widens the gap)",
            Significance::Contradicts => "contradicts the paper (undoing the choice narrows the gap)",
            Significance::Inconclusive => {
                "is inconclusive at this scale (within two standard deviations of the seed noise)"
            }
        };
        lines.push(format!(
            "{claim}: |gap to BF16| over the last 10% of steps {:.3}% with `{name}` vs {:.3}% with the recipe \
             (difference {:+.3}%, seed noise {:.3}%): our result {verdict}.",
            100.0 * undone.mean,
            100.0 * kept.mean,
            100.0 * diff,
            100.0 * noise
        ));
    }
    lines.push(
        "Scale: the paper's effects grow with K (the accumulator's error with the length of the sum) and with training \
         length (Appendix B.2's divergence came after ~300B tokens); this study's GEMMs have K ≤ 3·dim and its runs \
         hundreds of steps of a few thousand tokens, so small gaps here are expected and do not refute the paper's larger ones."
            .into(),
    );
    lines
}

/// `gap.svg/png`: the relative gap of each variant's smoothed training loss to BF16's
/// (mean over seeds), with the paper's ±0.25% band (Figure 10, right).
pub fn gap_curves(out: &Path, results: &[RunResult], names: &[String]) -> Result<String> {
    let mut series: Vec<Series> = names
        .iter()
        .filter(|n| n.as_str() != BASELINE)
        .map(|name| {
            let curves: Vec<Vec<(f64, f64)>> =
                results.iter().filter(|r| &r.variant == name).filter_map(|r| gap_curve(results, r)).collect();
            let points = (0..curves.first().map_or(0, Vec::len)).map(|i| {
                let x = curves[0][i].0;
                (x, 100.0 * curves.iter().map(|c| c[i].1).sum::<f64>() / curves.len() as f64)
            });
            Series::line(name.clone(), points.collect::<Vec<_>>())
        })
        .collect();
    let steps = results.first().map_or(1, |r| r.steps) as f64;
    for bound in [PAPER_GAP, -PAPER_GAP] {
        series.push(Series::line(
            format!("paper bound {:+.2}%", 100.0 * bound),
            [(1.0, 100.0 * bound), (steps, 100.0 * bound)],
        ));
    }
    let panel = Panel {
        title: "training loss relative to BF16 (smoothed, mean over seeds)".into(),
        x_label: "step".into(),
        y_label: "(L − L_bf16) / L_bf16 (%)".into(),
        series,
    };
    Lines { panels: vec![panel], scale: Scale::Linear }.save(&out.join("gap"), 900, 450)?;
    Ok("gap.png".into())
}
