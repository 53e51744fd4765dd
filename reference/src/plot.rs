//! The figures of the studies and the notebooks, in one style: line and scatter charts
//! ([`Lines`]), bar charts ([`Bars`]) and heatmaps with a colour bar ([`Heatmaps`]).
//!
//! A figure is a value that implements [`Figure`]: `save` writes it as SVG and PNG for a
//! report, `svg` draws it in memory as an [`Svg`], which renders inline in a Jupyter
//! notebook (evcxr) when it is a cell's value. Text is drawn with DejaVu Sans embedded by the
//! `dejavu` crate, so PNGs come out the same on a fresh machine without system fonts (the
//! SVG names the font and lets the viewer draw it).

use crate::error::{Error, Result};
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::Once;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesStyle {
    /// A line through the points; on a log scale also a marker at each point, where there
    /// are at most [`MARKED`] points (more markers would merge into a thick line).
    Line,
    /// A marker at each point and no line (a scatter plot).
    Points,
}

/// One curve or point cloud: a label for the legend and its (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: SeriesStyle,
}

impl Series {
    pub fn line(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        Series { label: label.into(), points: points.into_iter().collect(), style: SeriesStyle::Line }
    }
    pub fn points(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        Series { label: label.into(), points: points.into_iter().collect(), style: SeriesStyle::Points }
    }
}

/// One chart of a [`Lines`] figure.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The axes of a [`Lines`] figure. On a log axis, points at or below 0 cannot be drawn and
/// are left out; non-finite points are left out on any axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    LogY,
    LogLog,
}

/// The most points of a line that get markers on a log scale.
pub const MARKED: usize = 50;

impl Scale {
    fn shows(self, (x, y): (f64, f64)) -> bool {
        x.is_finite() && y.is_finite() && (self != Scale::LogLog || x > 0.0) && (self == Scale::Linear || y > 0.0)
    }

    fn marks(self, s: &Series) -> bool {
        s.style == SeriesStyle::Points || (self != Scale::Linear && s.points.len() <= MARKED)
    }
}

/// Panels side by side, all on the same kind of axes.
#[derive(Debug, Clone)]
pub struct Lines {
    pub panels: Vec<Panel>,
    pub scale: Scale,
}

/// One bar per entry, labelled below and with its value printed above.
#[derive(Debug, Clone)]
pub struct Bars {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<(String, f64)>,
    /// A log axis, for values that span orders of magnitude (bars at or below 0 are left out).
    pub log_y: bool,
}

/// How a heatmap maps values to colours; values outside the range are clamped to its ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorScale {
    /// White at 0 to dark blue at `max`, for magnitudes.
    Sequential { max: f64 },
    /// Blue at 0, white at `center`, red at `max`, for deviations from a reference value
    /// (relative expert load: 1 is balanced).
    Diverging { center: f64, max: f64 },
}

/// One heatmap: `values[row][column]`, rows named by `rows`, columns numbered from 0.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    /// What the columns are (e.g. "expert").
    pub x_label: String,
    pub rows: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub scale: ColorScale,
    /// What the colours mean, written beside the colour bar (e.g. "load / balanced").
    pub value_label: String,
}

/// Heatmaps in a grid of `columns`, filled row by row.
#[derive(Debug, Clone)]
pub struct Heatmaps {
    pub maps: Vec<Heatmap>,
    pub columns: usize,
}

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
        let png = stem.with_extension("png");
        let root = BitMapBackend::new(&png, (width, height)).into_drawing_area();
        self.draw(&root).map_err(|e| Error::file(&png, e))?;
        root.present().map_err(|e| Error::file(&png, e))
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

impl Figure for Lines {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        for (area, panel) in root.split_evenly((1, self.panels.len().max(1))).iter().zip(&self.panels) {
            let shown: Vec<Vec<(f64, f64)>> = panel
                .series
                .iter()
                .map(|s| s.points.iter().copied().filter(|&p| self.scale.shows(p)).collect())
                .collect();
            let all = || shown.iter().flatten();
            let (x0, x1) = padded_range(all().map(|p| p.0), self.scale == Scale::LogLog);
            let (y0, y1) = padded_range(all().map(|p| p.1), self.scale != Scale::Linear);
            let entries: Vec<Entry> = panel
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| Entry {
                    label: &s.label,
                    color: COLORS[i % COLORS.len()],
                    line: s.style == SeriesStyle::Line,
                    mark: self.scale.marks(s),
                })
                .collect();
            let area = legend(&area.titled(&panel.title, font(TITLE))?, &entries)?;
            match self.scale {
                Scale::Linear => lines_chart(&area, panel, &entries, &shown, x0..x1, y0..y1),
                Scale::LogY => lines_chart(&area, panel, &entries, &shown, x0..x1, log_axis(y0, y1)),
                Scale::LogLog => lines_chart(&area, panel, &entries, &shown, log_axis(x0, x1), log_axis(y0, y1)),
            }?;
        }
        Ok(())
    }
}

/// The axes and series of one panel (title and legend are drawn above it), on any axes.
fn lines_chart<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    entries: &[Entry],
    shown: &[Vec<(f64, f64)>],
    x: X,
    y: Y,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart =
        ChartBuilder::on(area).margin(10).x_label_area_size(45).y_label_area_size(80).build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .label_style(font(TICK))
        .axis_desc_style(font(LABEL))
        .draw()?;
    for (e, points) in entries.iter().zip(shown) {
        if e.line {
            chart.draw_series(LineSeries::new(points.iter().copied(), e.color.stroke_width(2)))?;
        }
        if e.mark {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, e.color.filled())))?;
        }
    }
    Ok(())
}

/// How one series is drawn, in its chart and in the legend.
struct Entry<'a> {
    label: &'a str,
    color: RGBColor,
    line: bool,
    mark: bool,
}

/// Draws the legend centred in rows at the top of `area` and returns the area below it:
/// the same place in every figure, and never over the data.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[Entry],
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    const ROW: i32 = 20;
    const SWATCH: i32 = 28; // a 22-pixel line or marker and a gap before the label
    const GAP: i32 = 20;
    if entries.is_empty() {
        return Ok(area.clone());
    }
    let width = area.dim_in_pixel().0 as i32;
    let mut rows: Vec<Vec<(usize, i32)>> = vec![Vec::new()];
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let w = SWATCH + area.estimate_text_size(e.label, &font(LABEL))?.0 as i32;
        if used > 0 && used + GAP + w > width - 20 {
            rows.push(Vec::new());
            used = 0;
        }
        used += if used > 0 { GAP } else { 0 };
        rows.last_mut().expect("rows starts non-empty").push((i, used));
        used += w;
    }
    let (top, rest) = area.split_vertically(rows.len() as i32 * ROW + 4);
    for (r, row) in rows.iter().enumerate() {
        let &(last, at) = row.last().expect("every row holds an entry");
        let row_width = at + SWATCH + top.estimate_text_size(entries[last].label, &font(LABEL))?.0 as i32;
        let y = r as i32 * ROW + ROW / 2;
        for &(i, at) in row {
            let e = &entries[i];
            let x = (width - row_width) / 2 + at;
            if e.line {
                top.draw(&PathElement::new(vec![(x, y), (x + 22, y)], e.color.stroke_width(2)))?;
            }
            if e.mark {
                top.draw(&Circle::new((x + 11, y), 3, e.color.filled()))?;
            }
            top.draw(&Text::new(e.label, (x + SWATCH, y), font(LABEL).pos(Pos::new(HPos::Left, VPos::Center))))?;
        }
    }
    Ok(rest)
}

impl Figure for Bars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, font(TITLE))?;
        let values = || self.bars.iter().map(|b| b.1).filter(|v| v.is_finite() && (!self.log_y || *v > 0.0));
        if self.log_y {
            // Room below the shortest bar, and above the tallest for its value.
            let (lo, hi) = padded_range(values(), true);
            let span = (hi / lo).ln();
            let (lo, hi) = (lo * (-0.2 * span).exp(), hi * (0.1 * span).exp());
            bars_chart(&area, self, log_axis(lo, hi), lo)
        } else {
            // Bars stand on 0: the axis starts there unless a bar goes below.
            let (lo, hi) = padded_range(values().chain([0.0]), false);
            let min = values().fold(0.0, f64::min);
            bars_chart(&area, self, if min < 0.0 { lo } else { 0.0 }..hi + (hi - lo) * 0.05, 0.0)
        }
    }
}

/// The bars of `bars` from `bottom` (0, or the foot of a log axis) on the axis `y`.
fn bars_chart<DB, Y>(area: &DrawingArea<DB, Shift>, bars: &Bars, y: Y, bottom: f64) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = bars.bars.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d((0..n - 1).into_segmented(), y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(&bars.y_label)
        .y_label_formatter(&|v| number(*v))
        .label_style(font(TICK))
        .x_label_style(font(LABEL))
        .axis_desc_style(font(LABEL))
        .draw()?;
    let gap = chart.plotting_area().dim_in_pixel().0 / n as u32 / 6;
    let shown = || bars.bars.iter().enumerate().filter(|(_, b)| b.1.is_finite() && (b.1 > 0.0 || bottom == 0.0));
    chart.draw_series(shown().map(|(i, b)| {
        let mut bar =
            Rectangle::new([(SegmentValue::Exact(i), bottom), (SegmentValue::Exact(i + 1), b.1)], COLORS[0].filled());
        bar.set_margin(0, 0, gap, gap);
        bar
    }))?;
    let above = font(LABEL).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(shown().map(|(i, b)| {
        EmptyElement::at((SegmentValue::CenterOf(i), b.1)) + Text::new(number(b.1), (0, -4), above.clone())
    }))?;
    Ok(())
}

const WHITE_RGB: RGBColor = RGBColor(255, 255, 255);
/// ColorBrewer "Blues": light to dark without passing through grey.
const BLUES: [RGBColor; 5] =
    [WHITE_RGB, RGBColor(198, 219, 239), RGBColor(107, 174, 214), RGBColor(33, 113, 181), RGBColor(8, 48, 107)];
/// The ends of ColorBrewer "RdBu".
const DIVERGING_BLUE: RGBColor = RGBColor(33, 102, 172);
const DIVERGING_RED: RGBColor = RGBColor(178, 24, 43);
/// Cells without a value (NaN).
const MISSING: RGBColor = RGBColor(190, 190, 190);

/// The colour `t` ∈ [0, 1] of the way along evenly spaced `stops`.
fn ramp(stops: &[RGBColor], t: f64) -> RGBColor {
    let x = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (x.floor() as usize).min(stops.len() - 2);
    let (a, b, f) = (stops[i], stops[i + 1], x - i as f64);
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// `num / den` clamped to [0, 1]; 1 for an empty range (everything is at its far end).
fn fraction(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        (num / den).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

impl ColorScale {
    /// The colour of `value` (grey for NaN).
    pub fn color(&self, value: f64) -> RGBColor {
        match *self {
            _ if value.is_nan() => MISSING,
            ColorScale::Sequential { max } => ramp(&BLUES, fraction(value, max)),
            ColorScale::Diverging { center, .. } if value < center => {
                ramp(&[WHITE_RGB, DIVERGING_BLUE], fraction(center - value, center))
            }
            ColorScale::Diverging { center, max } => {
                ramp(&[WHITE_RGB, DIVERGING_RED], fraction(value - center, max - center))
            }
        }
    }

    /// The top of the colour bar, and the values labelled on it.
    fn ticks(&self) -> (f64, Vec<f64>) {
        match *self {
            ColorScale::Sequential { max } => (max, vec![0.0, max / 2.0, max]),
            ColorScale::Diverging { center, max } => (max, vec![0.0, center, max]),
        }
    }
}

impl Figure for Heatmaps {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let columns = self.columns.max(1);
        if self.maps.is_empty() {
            return Ok(());
        }
        for (area, map) in root.split_evenly((self.maps.len().div_ceil(columns), columns)).iter().zip(&self.maps) {
            heatmap(area, map)?;
        }
        Ok(())
    }
}

/// Width of the colour bar beside each heatmap: the bar, its tick labels and its label.
const COLOR_BAR: u32 = 90;

fn heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, map: &Heatmap) -> DrawResult<DB> {
    let area = area.titled(&map.title, font(TITLE))?;
    let (cells, bar) = area.split_horizontally(area.dim_in_pixel().0.saturating_sub(COLOR_BAR));
    let n_cols = map.values.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let n_rows = map.values.len().max(1);
    let mut row_labels = 0;
    for row in &map.rows {
        row_labels = row_labels.max(area.estimate_text_size(row, &font(TICK))?.0);
    }
    // Segmented axes put each label at the centre of its row or column.
    let mut chart = ChartBuilder::on(&cells)
        .margin(8)
        .x_label_area_size(45)
        .y_label_area_size(row_labels + 12)
        .build_cartesian_2d((0..n_cols - 1).into_segmented(), (0..n_rows - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&map.x_label)
        .x_labels(n_cols.min(16))
        .y_labels(n_rows)
        .x_label_formatter(&|c| match c {
            SegmentValue::CenterOf(c) => c.to_string(),
            _ => String::new(),
        })
        .y_label_formatter(&|r| match r {
            SegmentValue::CenterOf(r) => map.rows.get(n_rows - 1 - r).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(font(TICK))
        .axis_desc_style(font(LABEL))
        .draw()?;
    // The first row on top, as it reads in a table.
    chart.draw_series(map.values.iter().enumerate().flat_map(|(r, row)| {
        let r = n_rows - 1 - r;
        row.iter().enumerate().map(move |(c, &v)| {
            let corners = [
                (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
            ];
            Rectangle::new(corners, map.scale.color(v).filled())
        })
    }))?;
    // The bar spans the same pixel rows as the cells.
    let (_, cell_rows) = chart.plotting_area().get_pixel_range();
    let offset = bar.get_base_pixel().1;
    color_bar(&bar, (cell_rows.start - offset, cell_rows.end - offset), map)
}

/// The colour bar of `map` from pixel row `top` (its top value) to `bottom` (0), with ticks
/// and `value_label`.
fn color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (top, bottom): (i32, i32),
    map: &Heatmap,
) -> DrawResult<DB> {
    const X: i32 = 10;
    const W: i32 = 16;
    let (max, ticks) = map.scale.ticks();
    let height = (bottom - top).max(1);
    let steps = height.min(64);
    for s in 0..steps {
        let (y0, y1) = (bottom - height * s / steps, bottom - height * (s + 1) / steps);
        let value = max * (s as f64 + 0.5) / steps as f64;
        area.draw(&Rectangle::new([(X, y1), (X + W, y0)], map.scale.color(value).filled()))?;
    }
    area.draw(&Rectangle::new([(X, top), (X + W, bottom)], BLACK.stroke_width(1)))?;
    for t in ticks {
        let y = bottom - (height as f64 * fraction(t, max)).round() as i32;
        area.draw(&PathElement::new(vec![(X + W, y), (X + W + 4, y)], BLACK.stroke_width(1)))?;
        area.draw(&Text::new(number(t), (X + W + 7, y), font(TICK).pos(Pos::new(HPos::Left, VPos::Center))))?;
    }
    let label = font(LABEL).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Top));
    let x = area.dim_in_pixel().0 as i32 - 22;
    area.draw(&Text::new(map.value_label.clone(), (x, (top + bottom) / 2), label))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of an SVG drawn by plotters (each on a line of its own).
    fn texts(svg: &Svg) -> Vec<&str> {
        svg.as_str().lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('<')).collect()
    }

    fn has_all(svg: &Svg, wanted: &[&str]) {
        let texts = texts(svg);
        for w in wanted {
            assert!(texts.contains(w), "no text {w:?} in the SVG: {texts:?}");
        }
    }

    fn sum(c: RGBColor) -> u32 {
        c.0 as u32 + c.1 as u32 + c.2 as u32
    }

    #[test]
    fn diverging_colours_are_blue_white_red_and_monotone() {
        let scale = ColorScale::Diverging { center: 1.0, max: 3.0 };
        assert_eq!(scale.color(1.0), RGBColor(255, 255, 255));
        assert_eq!(scale.color(0.0), DIVERGING_BLUE);
        assert_eq!(scale.color(3.0), DIVERGING_RED);
        assert_eq!(scale.color(-5.0), DIVERGING_BLUE, "clamped below");
        assert_eq!(scale.color(9.0), DIVERGING_RED, "clamped above");
        let blue = scale.color(0.0);
        assert!(blue.2 > 150 && blue.0 < 60, "{blue:?}");
        let red = scale.color(3.0);
        assert!(red.0 > 150 && red.1 < 60 && red.2 < 60, "{red:?}");
        // Whiter towards the centre from either side, one channel at a time.
        let grid: Vec<RGBColor> = (0..=300).map(|i| scale.color(i as f64 / 100.0)).collect();
        for w in grid[..=100].windows(2) {
            assert!(w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2, "{w:?}");
        }
        for w in grid[100..].windows(2) {
            assert!(w[0].0 >= w[1].0 && w[0].1 >= w[1].1 && w[0].2 >= w[1].2, "{w:?}");
        }
        assert_eq!(scale.color(f64::NAN), MISSING);
    }

    #[test]
    fn sequential_colours_darken_from_white() {
        let scale = ColorScale::Sequential { max: 2.0 };
        assert_eq!(scale.color(0.0), RGBColor(255, 255, 255));
        assert_eq!(scale.color(2.0), RGBColor(8, 48, 107));
        let grid: Vec<u32> = (0..=100).map(|i| sum(scale.color(i as f64 / 50.0))).collect();
        assert!(grid.windows(2).all(|w| w[0] > w[1]), "{grid:?}");
    }

    #[test]
    fn log_ticks_are_readable() {
        assert_eq!(log_ticks(0.5, 2000.0), [1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(log_ticks(120.0, 4900.0), [200.0, 500.0, 1000.0, 2000.0]);
        assert_eq!(log_ticks(1.9, 5.7).len(), 4, "2, 3, 4, 5");
        assert!(log_ticks(1e-12, 1e12).len() <= 8);
        let narrow: Vec<String> = log_ticks(0.02528, 0.03781).iter().map(|&t| number(t)).collect();
        assert_eq!(narrow, ["0.026", "0.028", "0.03", "0.032", "0.034", "0.036"]);
    }

    #[test]
    fn numbers_are_short() {
        let cases = [(0.0, "0"), (71680.0, "71680"), (0.5, "0.5"), (1.25, "1.25"), (0.001953125, "0.001953")];
        for (v, s) in
            cases.into_iter().chain([(1e-5, "1e-5"), (2.5e6, "2.5e6"), (-3.0, "-3"), (0.30000000000000004, "0.3")])
        {
            assert_eq!(number(v), s, "{v}");
        }
    }

    fn panel(title: &str, series: Vec<Series>) -> Panel {
        Panel { title: title.into(), x_label: "step".into(), y_label: "nats per token".into(), series }
    }

    #[test]
    fn a_lines_svg_holds_title_axis_labels_and_legend() {
        let series = vec![
            Series::line("baseline", [(1.0, 3.0), (2.0, 2.5), (3.0, 2.2)]),
            Series::points("aux-loss-free", [(1.0, 2.9), (3.0, 2.1)]),
        ];
        for scale in [Scale::Linear, Scale::LogY, Scale::LogLog] {
            let svg = Lines { panels: vec![panel("training loss", series.clone())], scale }.svg(600, 400).unwrap();
            has_all(&svg, &["training loss", "step", "nats per token", "baseline", "aux-loss-free"]);
        }
    }

    #[test]
    fn log_scales_leave_out_points_they_cannot_draw() {
        let nothing = vec![Series::line("at or below 0", [(0.0, 1.0), (1.0, 0.0), (-1.0, -2.0), (f64::NAN, 1.0)])];
        for scale in [Scale::LogY, Scale::LogLog] {
            let svg = Lines { panels: vec![panel("empty", nothing.clone())], scale }.svg(400, 300).unwrap();
            has_all(&svg, &["empty", "at or below 0"]);
        }
        let bars =
            Bars { title: "none".into(), y_label: "bytes".into(), bars: vec![("zero".into(), 0.0)], log_y: true };
        has_all(&bars.svg(400, 300).unwrap(), &["none", "zero"]);
    }

    #[test]
    fn a_bars_svg_holds_labels_and_values() {
        let bars = Bars {
            title: "KV cache per token and layer".into(),
            y_label: "bytes".into(),
            bars: vec![("MHA".into(), 65536.0), ("GQA".into(), 8192.0), ("MQA".into(), 1024.0), ("MLA".into(), 1152.0)],
            log_y: true,
        };
        let svg = bars.svg(600, 400).unwrap();
        has_all(&svg, &["KV cache per token and layer", "bytes", "MHA", "GQA", "MQA", "MLA", "65536", "1152"]);
    }

    fn expert_load(title: &str) -> Heatmap {
        Heatmap {
            title: title.into(),
            x_label: "expert".into(),
            rows: vec!["prose".into(), "code".into()],
            values: vec![vec![0.5, 1.0, 2.5, f64::NAN], vec![1.0, 1.0, 0.0, 4.0]],
            // A top of 5 so that its tick label differs from the column numbers 0 to 3.
            scale: ColorScale::Diverging { center: 1.0, max: 5.0 },
            value_label: "load / balanced".into(),
        }
    }

    #[test]
    fn every_heatmap_has_a_labelled_colour_bar() {
        let maps = Heatmaps { maps: vec![expert_load("layer 1"), expert_load("layer 2")], columns: 2 };
        let svg = maps.svg(1000, 250).unwrap();
        has_all(&svg, &["layer 1", "layer 2", "expert", "prose", "code", "5"]);
        assert_eq!(texts(&svg).iter().filter(|t| **t == "load / balanced").count(), 2, "a colour bar per map");
        let blue = format!("#{:02X}{:02X}{:02X}", DIVERGING_BLUE.0, DIVERGING_BLUE.1, DIVERGING_BLUE.2);
        assert!(svg.as_str().contains(&blue), "the bar reaches full blue");
    }

    #[test]
    fn an_svg_displays_in_evcxr_and_as_text() {
        let svg = Svg("<svg/>".into());
        assert_eq!(svg.evcxr_block(), "EVCXR_BEGIN_CONTENT image/svg+xml\n<svg/>\nEVCXR_END_CONTENT\n");
        assert_eq!(svg.to_string(), "<svg/>");
        let svg = Heatmaps { maps: vec![expert_load("x")], columns: 1 }.svg(500, 200).unwrap();
        assert!(svg.as_str().starts_with("<svg") && !svg.as_str().lines().any(|l| l == "EVCXR_END_CONTENT"));
    }

    #[test]
    fn save_writes_svg_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let stem = dir.path().join("fig");
        Heatmaps { maps: vec![expert_load("x")], columns: 1 }.save(&stem, 500, 200).unwrap();
        assert!(std::fs::read_to_string(stem.with_extension("svg")).unwrap().contains("load / balanced"));
        assert!(std::fs::read(stem.with_extension("png")).unwrap().starts_with(b"\x89PNG"));
    }
}
