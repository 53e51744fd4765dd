//! What a study writes: `results.json` (every number), `report.md` (mean ± standard
//! deviation over seeds, the paper's numbers beside ours, and a sentence per claim that
//! says whether our small-scale result agrees), and the figures.

use crate::run::RunResult;
use serde::Serialize;

/// Mean and sample standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Some(Stat { mean, std: var.sqrt(), n })
    }

    pub fn show(&self, digits: usize) -> String {
        format!("{:.*} ± {:.*}", digits, self.mean, digits, self.std)
    }
}

/// `f` of every run of `variant`, over seeds.
pub fn stat(results: &[RunResult], variant: &str, f: impl Fn(&RunResult) -> Option<f64>) -> Option<Stat> {
    let values: Vec<f64> = results.iter().filter(|r| r.variant == variant).filter_map(f).collect();
    Stat::of(&values)
}

/// How a difference between two variants reads, given the spread over seeds: `lower` is
/// the variant the paper says should have the smaller value.
pub fn compare(what: &str, lower: (&str, Stat), higher: (&str, Stat)) -> String {
    let diff = higher.1.mean - lower.1.mean;
    let noise = (lower.1.std.powi(2) + higher.1.std.powi(2)).sqrt();
    let verdict = if lower.1.n < 2 {
        "one seed only, so no verdict on significance"
    } else if diff > 2.0 * noise {
        "agrees with the paper"
    } else if diff < -2.0 * noise {
        "contradicts the paper"
    } else {
        "is inconclusive at this scale (the difference is within two standard deviations of the seed noise)"
    };
    format!(
        "{what}: {} {:.4} vs {} {:.4} (difference {:+.4}, seed noise {:.4}): our result {verdict}.",
        lower.0, lower.1.mean, higher.0, higher.1.mean, diff, noise
    )
}

/// A Markdown table: one row per variant, one column per metric.
pub fn table(
    results: &[RunResult],
    variants: &[String],
    columns: &[(&str, usize, &dyn Fn(&RunResult) -> Option<f64>)],
) -> String {
    let mut s = format!(
        "| variant | {} |\n|---|{}\n",
        columns.iter().map(|c| c.0).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(columns.len())
    );
    for v in variants {
        let cells: Vec<String> =
            columns.iter().map(|(_, digits, f)| stat(results, v, f).map_or("–".into(), |s| s.show(*digits))).collect();
        s.push_str(&format!("| {v} | {} |\n", cells.join(" | ")));
    }
    s
}
