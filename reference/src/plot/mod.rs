//! The figures of the studies and the notebooks, in one style: line and scatter charts
//! ([`Lines`]), bar charts ([`Bars`]) and heatmaps with a colour bar ([`Heatmaps`]).
//!
//! A figure is a value that implements [`Figure`]: `save` writes it as SVG and PNG for a
//! report, `svg` draws it in memory as an [`Svg`], and `show` renders that inline in a
//! Jupyter notebook (evcxr). One file a kind (`lines.rs`, `bars.rs`, `heatmap.rs`); the style
//! (fonts, colours, axis ranges and ticks) is here. Text is drawn with DejaVu Sans embedded by the
//! `dejavu` crate, so PNGs come out the same on a fresh machine without system fonts (the
//! SVG names the font and lets the viewer draw it).

mod bars;
mod heatmap;
mod lines;
#[cfg(test)]
mod tests;
mod tokens;

pub use bars::Bars;
pub use heatmap::{ColorScale, Heatmap, Heatmaps};
pub use lines::{Lines, Panel, Scale, Series, SeriesStyle, MARKED};
pub use tokens::{TokenClass, TokenStrip};

use crate::error::{Error, Result};
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// An SVG document. As the value of a notebook cell it renders inline (evcxr's display
/// protocol); `Display` writes the SVG text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svg(pub String);

impl Svg {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// evcxr calls an inherent `evcxr_display` method on a cell's final value; what it prints
    /// between the markers becomes the cell's output of that MIME type.
    pub fn evcxr_display(&self) {
        print!("{}", self.evcxr_block());
    }

    fn evcxr_block(&self) -> String {
        format!("EVCXR_BEGIN_CONTENT image/svg+xml\n{}\nEVCXR_END_CONTENT\n", self.0)
    }
}

impl std::fmt::Display for Svg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What drawing on a plotters backend `DB` returns.
pub type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something drawn the same way on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;

    /// The figure as an SVG document of width × height pixels, drawn in memory.
    fn svg(&self, width: u32, height: u32) -> Result<Svg> {
        register_font();
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::file("<svg>", e))?;
            root.present().map_err(|e| Error::file("<svg>", e))?;
        }
        Ok(Svg(text))
    }

    /// Draws the figure inline in a notebook, now: its SVG goes to stdout in evcxr's display
    /// protocol. Unlike a cell's final value, which evcxr sometimes shows through `Debug`
    /// (when it must compile a cell twice to learn new variables' types), this always
    /// renders.
    fn show(&self, width: u32, height: u32) -> Result<()> {
        self.svg(width, height)?.evcxr_display();
        Ok(())
    }

    /// Writes the figure to `stem.svg` and `stem.png` (width × height pixels).
    fn save(&self, stem: &Path, width: u32, height: u32) -> Result<()> {
        let svg = self.svg(width, height)?;
        crate::io::write_atomically(&stem.with_extension("svg"), |f| std::io::Write::write_all(f, svg.0.as_bytes()))?;
        crate::io::write_atomically_via_path(&stem.with_extension("png"), |png| {
            let root = BitMapBackend::new(png, (width, height)).into_drawing_area();
            self.draw(&root).map_err(|e| Error::file(png, e))?;
            root.present().map_err(|e| Error::file(png, e))
        })
    }
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; failure is a bug there.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the dejavu crate's DejaVuSans.ttf did not parse"));
    });
}

// One style for every figure: these sizes, a white background, the colours below.
const TITLE: u32 = 22;
const LABEL: u32 = 16;
const TICK: u32 = 14;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().color(&BLACK)
}

/// Tick and value labels: 4 significant digits without trailing zeros, and powers of ten
/// (`1e-5`) outside [0.001, 1000000) so that log axes stay short.
fn number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    let magnitude = v.abs().log10().floor() as i32;
    if (-3..6).contains(&magnitude) {
        trim(format!("{v:.*}", (3 - magnitude).max(0) as usize))
    } else {
        let s = format!("{v:.3e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{exponent}", trim(mantissa.to_string()))
    }
}

/// The smallest and largest of `values`, widened by 5% (in log space on a log axis) so that
/// markers at the ends are not cut; a fixed range where there is nothing to draw.
fn padded_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    let (a, b) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
    let pad = if b > a {
        (b - a) * 0.05
    } else if log || a == 0.0 {
        0.5
    } else {
        a.abs() * 0.05
    };
    if log {
        ((a - pad).exp(), (b + pad).exp())
    } else {
        (a - pad, b + pad)
    }
}

/// Ticks of a log axis from `lo` to `hi`: powers of ten (at most 8 of them), and 2 and 5
/// times them, or every multiple, where that gives too few ticks to read a value off.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32);
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        let at = |e: i32| mantissas.iter().map(move |m| m * 10f64.powi(e));
        decades.clone().flat_map(at).filter(|v| (lo..=hi).contains(v)).collect()
    };
    let powers = ticks(&[1.0]);
    if powers.len() > 8 {
        return powers.iter().copied().step_by(powers.len().div_ceil(8)).collect();
    }
    for mantissas in [&[1.0][..], &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]] {
        let t = ticks(mantissas);
        if t.len() >= 3 {
            return t;
        }
    }
    // Narrower than the multiples of a decade: evenly spaced round values, as on a linear axis.
    let top = 10f64.powf((hi - lo).log10().ceil());
    for step in [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01].map(|f| f * top) {
        let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
        if last - first >= 2 {
            return (first..=last).map(|i| i as f64 * step).collect();
        }
    }
    vec![lo, hi]
}

/// A log axis from `lo` to `hi` with the ticks of [`log_ticks`].
fn log_axis(lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    (lo..hi).log_scale().with_key_points(log_ticks(lo, hi))
}
