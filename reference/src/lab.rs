//! What a notebook cell needs around the model code: tables that render inline, checks that
//! fail a notebook when what it shows is wrong, and where the goldens are.
//!
//! Rendering follows evcxr's display protocol: evcxr calls an inherent `evcxr_display`
//! method on a cell's final value, which prints `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT`
//! blocks on stdout; every block becomes one representation of the same output. Figures
//! render the same way through [`crate::plot::Svg`].

use std::fmt::{self, Write as _};
use std::path::PathBuf;

/// `$V3LAB_GOLDENS` when set, else `shared/goldens` beside the repository this crate was
/// built from (`../shared/goldens` from the project root).
pub fn goldens_dir() -> PathBuf {
    match std::env::var_os("V3LAB_GOLDENS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/goldens"),
    }
}

/// The repository's root folder (configs, docs), found from where this crate was built.
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A table with a title, a header and rows of already formatted cells: HTML in a notebook,
/// Markdown as text (`Display`, and the plain-text representation of the notebook output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Table { title: title.into(), header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Appends a row (anything `Display`: numbers are formatted by the caller).
    pub fn row<I, S>(mut self, cells: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.push(cells);
        self
    }

    pub fn push<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.rows.push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// The table as an HTML fragment; numbers (cells that parse as one) align right.
    pub fn html(&self) -> String {
        let mut out = String::from("<table>");
        if !self.title.is_empty() {
            let _ =
                write!(out, "<caption style=\"text-align:left;font-weight:bold\">{}</caption>", escape(&self.title));
        }
        out.push_str("<thead><tr>");
        for h in &self.header {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            out.push_str("<tr>");
            for cell in row {
                let align = if looks_numeric(cell) { "right" } else { "left" };
                let _ = write!(out, "<td style=\"text-align:{align}\">{}</td>", escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        out
    }

    /// evcxr's display hook: the HTML table, with the Markdown text as the plain fallback.
    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.html());
        println!("EVCXR_BEGIN_CONTENT text/plain\n{self}\nEVCXR_END_CONTENT");
    }
}

impl fmt::Display for Table {
    /// A Markdown table (what the study reports hold).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.title.is_empty() {
            writeln!(f, "**{}**\n", self.title)?;
        }
        writeln!(f, "| {} |", self.header.join(" | "))?;
        let rule: Vec<&str> = self.header.iter().map(|_| "---").collect();
        writeln!(f, "|{}|", rule.join("|"))?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn looks_numeric(cell: &str) -> bool {
    let t = cell.trim().trim_end_matches('%').replace([',', '×', '±', ' '], "");
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
}

/// A check a notebook makes of what it shows: printed when it holds, a panic (which fails
/// the cell, and so the notebook run in CI) when it does not.
#[track_caller]
pub fn check(what: &str, holds: bool, evidence: impl fmt::Display) {
    if holds {
        println!("✓ {what}: {evidence}");
    } else {
        panic!("✗ {what}: {evidence}");
    }
}

/// Checks `|got − want| ≤ tol · |want|` (a NaN fails); returns the relative difference.
#[track_caller]
pub fn check_close(what: &str, got: f64, want: f64, tol: f64) -> f64 {
    let rel = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
    let (g, w) = (significant(got), significant(want));
    check(what, rel <= tol, format_args!("{g} against {w} (relative difference {rel:.2e}, bound {tol:.0e})"));
    rel
}

/// `v` to 6 significant digits, in scientific notation outside [0.001, 10⁶).
fn significant(v: f64) -> String {
    let magnitude = if v == 0.0 || !v.is_finite() { 0 } else { v.abs().log10().floor() as i32 };
    if (-3..6).contains(&magnitude) {
        format!("{v:.*}", (5 - magnitude).max(0) as usize)
    } else {
        format!("{v:.5e}")
    }
}

/// A `rows × cols` matrix of standard normal samples, the same for a seed on every machine
/// (ChaCha8): toy inputs for a notebook cell.
pub fn randn(rows: usize, cols: usize, seed: u64) -> ndarray::Array2<f32> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    ndarray::Array2::from_shape_simple_fn((rows, cols), || {
        rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng)
    })
}

/// `‖got − want‖ / ‖want‖` over two equally long sequences, in f64 (0 when equal).
pub fn rel_err(got: impl IntoIterator<Item = f64>, want: impl IntoIterator<Item = f64>) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.into_iter().zip(want) {
        diff += (g - w) * (g - w);
        norm += w * w;
    }
    if diff == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_renders_as_markdown_and_escaped_html() {
        let t = Table::new("cache", &["attention", "bytes"]).row(["MLA <latent>", "1,152"]);
        assert_eq!(t.to_string(), "**cache**\n\n| attention | bytes |\n|---|---|\n| MLA <latent> | 1,152 |\n");
        let html = t.html();
        assert!(html.contains("<td style=\"text-align:left\">MLA &lt;latent&gt;</td>"), "{html}");
        assert!(html.contains("<td style=\"text-align:right\">1,152</td>"), "{html}");
    }

    #[test]
    #[should_panic(expected = "✗ logits")]
    fn a_failed_check_panics() {
        check_close("logits", 1.1, 1.0, 1e-3);
    }

    #[test]
    fn a_nan_never_passes_a_closeness_check() {
        assert!(std::panic::catch_unwind(|| check_close("nan", f64::NAN, 1.0, 1.0)).is_err());
    }

    #[test]
    fn numbers_keep_six_significant_digits() {
        assert_eq!(significant(671026419200.0), "6.71026e11");
        assert_eq!(significant(1.3688879), "1.36889");
        assert_eq!(significant(0.00025), "2.50000e-4");
        assert_eq!(significant(448.0), "448.000");
    }

    #[test]
    fn randn_is_standard_normal_and_reproducible() {
        let x = randn(200, 500, 7);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        // 100,000 samples: the standard errors are 0.003 (mean) and 0.0045 (variance).
        assert!(mean.abs() < 0.015 && (var - 1.0).abs() < 0.025, "mean {mean}, variance {var}");
        assert_eq!(x, randn(200, 500, 7));
        assert_ne!(x, randn(200, 500, 8));
    }

    #[test]
    fn relative_error_is_zero_only_for_equal_values() {
        assert_eq!(rel_err([1.0, 2.0], [1.0, 2.0]), 0.0);
        assert!((rel_err([1.0, 2.0], [1.0, 1.0]) - 1.0 / 2f64.sqrt()).abs() < 1e-15);
    }
}
