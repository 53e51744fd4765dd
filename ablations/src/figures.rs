//! The studies' figures (SVG and PNG): training and validation curves, MaxVio curves, and
//! the relative expert load per domain as heatmaps (the paper's Figure 9).

use crate::corpus::Domain;
use crate::run::RunResult;
use anyhow::Result;
use std::path::Path;
use v3lab_reference::plot::{ColorScale, Figure, Heatmap, Heatmaps, Lines, Panel, Scale, Series};

/// Steps averaged in the training curves (Wang et al. average MaxVio_batch over 100
/// neighbouring steps; small runs have fewer steps).
fn window(steps: usize) -> usize {
    (steps / 20).clamp(1, 100)
}

/// The mean over seeds of `f` at each curve point of `variant` (points where `f` is defined).
fn mean_curve(
    results: &[RunResult],
    variant: &str,
    f: impl Fn(&crate::run::CurvePoint) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let runs: Vec<&RunResult> = results.iter().filter(|r| r.variant == variant).collect();
    let Some(first) = runs.first() else { return Vec::new() };
    (0..first.curve.len())
        .filter_map(|i| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r.curve.get(i).and_then(&f)).collect();
            (!values.is_empty())
                .then(|| ((first.curve[i].step + 1) as f64, values.iter().sum::<f64>() / values.len() as f64))
        })
        .collect()
}

fn smooth(points: Vec<(f64, f64)>, window: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let slice = &points[from..=i];
            (points[i].0, slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64)
        })
        .collect()
}

/// One run's training loss smoothed over `window` steps: `(step + 1, loss)`.
pub fn smoothed_train_loss(run: &RunResult, window: usize) -> Vec<(f64, f64)> {
    smooth(run.curve.iter().map(|p| ((p.step + 1) as f64, p.train_loss as f64)).collect(), window)
}

fn panel(
    title: &str,
    y: &str,
    results: &[RunResult],
    names: &[String],
    f: &dyn Fn(&crate::run::CurvePoint) -> Option<f64>,
    w: usize,
) -> Panel {
    Panel {
        title: title.into(),
        x_label: "step".into(),
        y_label: y.into(),
        series: names.iter().map(|n| Series::line(n.clone(), smooth(mean_curve(results, n, f), w))).collect(),
    }
}

/// Training and validation loss against steps, mean over seeds.
pub fn loss_figure(results: &[RunResult], names: &[String]) -> Lines {
    let w = window(results.first().map_or(1, |r| r.steps));
    let panels = vec![
        panel("training loss (main model)", "nats per token", results, names, &|p| Some(p.train_loss as f64), w),
        panel("validation loss (main model)", "nats per token", results, names, &|p| p.val_loss, 1),
    ];
    Lines { panels, scale: Scale::Linear }
}

/// MaxVio_batch during training and MaxVio_global on validation, mean over seeds.
pub fn max_vio_figure(results: &[RunResult], names: &[String]) -> Lines {
    let w = window(results.first().map_or(1, |r| r.steps));
    let panels = vec![
        panel("MaxVio_batch (training batches)", "MaxVio", results, names, &|p| Some(p.max_vio_batch), w),
        panel("MaxVio_global (validation)", "MaxVio", results, names, &|p| p.val_max_vio, 1),
    ];
    Lines { panels, scale: Scale::Linear }
}

/// Relative expert load (actual / balanced) per domain for the first and last MoE layers,
/// one heatmap per variant and layer (seed 0), a row of heatmaps per variant.
pub fn expert_load_figure(results: &[RunResult], names: &[String]) -> Heatmaps {
    let mut maps = Vec::new();
    let n_layers = results.first().and_then(|r| r.domains.values().next()).map_or(0, |d| d.relative_load.len());
    let layers: Vec<usize> = if n_layers > 1 { vec![0, n_layers - 1] } else { (0..n_layers).collect() };
    for name in names {
        let Some(run) = results.iter().find(|r| &r.variant == name && r.seed == 0) else { continue };
        for &layer in &layers {
            let (rows, values): (Vec<String>, Vec<Vec<f64>>) = Domain::ALL
                .iter()
                .filter_map(|d| {
                    run.domains.get(d.name()).map(|e| (d.name().to_string(), e.relative_load[layer].clone()))
                })
                .unzip();
            maps.push(Heatmap {
                title: format!("{name}, MoE layer {}", layer + 1),
                x_label: "expert".into(),
                rows,
                values,
                // Balanced load is 1: under-used experts turn blue, specialised ones red.
                scale: ColorScale::Diverging { center: 1.0, max: 3.0 },
                value_label: "load / balanced".into(),
            });
        }
    }
    Heatmaps { maps, columns: layers.len().max(1) }
}

/// `curves.svg/png`: [`loss_figure`].
pub fn loss_curves(out: &Path, results: &[RunResult], names: &[String]) -> Result<String> {
    loss_figure(results, names).save(&out.join("curves"), 1200, 450)?;
    Ok("curves.png".into())
}

/// `maxvio.svg/png`: [`max_vio_figure`].
pub fn max_vio_curves(out: &Path, results: &[RunResult], names: &[String]) -> Result<String> {
    max_vio_figure(results, names).save(&out.join("maxvio"), 1200, 450)?;
    Ok("maxvio.png".into())
}

/// `expert-load.svg/png`: [`expert_load_figure`], 600 × 170 pixels a heatmap.
pub fn expert_load(out: &Path, results: &[RunResult], names: &[String]) -> Result<String> {
    let figure = expert_load_figure(results, names);
    let height = 170 * figure.maps.len().div_ceil(figure.columns) as u32 + 40;
    figure.save(&out.join("expert-load"), 600 * figure.columns as u32, height)?;
    Ok("expert-load.png".into())
}
