//! What a study writes: `results.json` (every number), `report.md` (mean ± standard
//! deviation over seeds, the paper's numbers beside ours, and a sentence per claim that
//! says whether our small-scale result agrees), and the figures.

use crate::corpus::Domain;
use crate::run::{DomainEval, RunResult};
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

    /// `self − other` and the seed noise of that difference (the two spreads combined).
    pub fn minus(&self, other: &Stat) -> (f64, f64) {
        (self.mean - other.mean, (self.std.powi(2) + other.std.powi(2)).sqrt())
    }
}

/// `f` of every run of `variant`, over seeds.
pub fn stat(results: &[RunResult], variant: &str, f: impl Fn(&RunResult) -> Option<f64>) -> Option<Stat> {
    let values: Vec<f64> = results.iter().filter(|r| r.variant == variant).filter_map(f).collect();
    Stat::of(&values)
}

/// What a difference the paper expects to be positive says, against the seed noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Significance {
    OneSeed,
    Agrees,
    Contradicts,
    Inconclusive,
}

/// The studies' one rule: a difference counts beyond two standard deviations of the seed
/// noise, and needs at least two seeds (`n`).
pub fn significance(diff: f64, noise: f64, n: usize) -> Significance {
    if n < 2 {
        Significance::OneSeed
    } else if diff > 2.0 * noise {
        Significance::Agrees
    } else if diff < -2.0 * noise {
        Significance::Contradicts
    } else {
        Significance::Inconclusive
    }
}

/// How a difference between two variants reads, given the spread over seeds: `lower` is
/// the variant the paper says should have the smaller value.
pub fn compare(what: &str, lower: (&str, Stat), higher: (&str, Stat)) -> String {
    let (diff, noise) = higher.1.minus(&lower.1);
    let verdict = match significance(diff, noise, lower.1.n) {
        Significance::OneSeed => "one seed only, so no verdict on significance",
        Significance::Agrees => "agrees with the paper",
        Significance::Contradicts => "contradicts the paper",
        Significance::Inconclusive => {
            "is inconclusive at this scale (the difference is within two standard deviations of the seed noise)"
        }
    };
    format!(
        "{what}: {} {:.4} vs {} {:.4} (difference {:+.4}, seed noise {:.4}): our result {verdict}.",
        lower.0, lower.1.mean, higher.0, higher.1.mean, diff, noise
    )
}

/// A table column: header, decimals, and the metric of one run.
pub type Column<'a> = (&'a str, usize, &'a dyn Fn(&RunResult) -> Option<f64>);

/// A Markdown table: one row per variant, one column per metric.
pub fn table(results: &[RunResult], variants: &[String], columns: &[Column]) -> String {
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

/// The mean of `metric` over the domains a run was evaluated on.
pub fn domain_mean(r: &RunResult, metric: fn(&DomainEval) -> f64) -> f64 {
    r.domains.values().map(metric).sum::<f64>() / r.domains.len().max(1) as f64
}

/// A metric of one run, boxed to sit in a list of columns.
type Metric = Box<dyn Fn(&RunResult) -> Option<f64>>;

/// A table of `metric` per domain (and its mean over domains), one row per variant.
pub fn per_domain_table(
    results: &[RunResult],
    variants: &[String],
    metric: fn(&DomainEval) -> f64,
    digits: usize,
) -> String {
    let domains: Vec<&str> = Domain::ALL.iter().map(|d| d.name()).collect();
    let fns: Vec<Metric> = domains
        .iter()
        .map(|d| {
            let d = d.to_string();
            Box::new(move |r: &RunResult| r.domains.get(&d).map(metric)) as Metric
        })
        .chain(std::iter::once(
            Box::new(move |r: &RunResult| Some(domain_mean(r, metric))) as Box<dyn Fn(&RunResult) -> Option<f64>>
        ))
        .collect();
    let headers: Vec<&str> = domains.iter().copied().chain(std::iter::once("mean")).collect();
    let columns: Vec<Column> = headers.iter().zip(&fns).map(|(h, f)| (*h, digits, f.as_ref())).collect();
    table(results, variants, &columns)
}

/// `stat` of the metric for `variant`, or a line saying it is missing.
pub fn compare_variants(
    what: &str,
    results: &[RunResult],
    lower: &str,
    higher: &str,
    f: &dyn Fn(&RunResult) -> Option<f64>,
) -> String {
    match (stat(results, lower, f), stat(results, higher, f)) {
        (Some(a), Some(b)) => compare(what, (lower, a), (higher, b)),
        _ => format!("{what}: not measured for {lower} or {higher}."),
    }
}
