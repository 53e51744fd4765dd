//! Small line charts for the studies, written as SVG and PNG with plotters.
//!
//! Text in the PNG is drawn with ab_glyph from DejaVu Sans embedded by the `dejavu` crate,
//! so figures come out the same on a fresh machine without system fonts (the SVG names
//! the font and lets the viewer draw it).

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One curve: a label and its (x, y) points (points with y ≤ 0 are left out on a log axis).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel of a figure: a log-log chart of several series.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped by the crate; failure is a bug there.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the dejavu crate's DejaVuSans.ttf did not parse"));
    });
}

/// Something drawn the same way on any plotters backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Writes `figure` to `stem.svg` and `stem.png` (width × height pixels).
pub fn write_svg_png(stem: &Path, figure: &impl Figure, width: u32, height: u32) -> Result<()> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    {
        let root = SVGBackend::new(&svg, (width, height)).into_drawing_area();
        figure.draw(&root).map_err(|e| Error::file(&svg, e))?;
        root.present().map_err(|e| Error::file(&svg, e))?;
    }
    let root = BitMapBackend::new(&png, (width, height)).into_drawing_area();
    figure.draw(&root).map_err(|e| Error::file(&png, e))?;
    root.present().map_err(|e| Error::file(&png, e))?;
    Ok(())
}

/// Panels side by side, log-log (error against K).
struct LogLog<'a>(&'a [Panel]);
/// Panels side by side, linear axes (training curves).
struct Linear<'a>(&'a [Panel]);

impl Figure for LogLog<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        draw(root, self.0)
    }
}

/// Writes `panels` side by side to `stem.svg` and `stem.png` (width × height pixels).
pub fn log_log_panels(stem: &Path, panels: &[Panel], width: u32, height: u32) -> Result<()> {
    write_svg_png(stem, &LogLog(panels), width, height)
}

/// Writes `panels` side by side, on linear axes, to `stem.svg` and `stem.png`.
pub fn line_panels(stem: &Path, panels: &[Panel], width: u32, height: u32) -> Result<()> {
    write_svg_png(stem, &Linear(panels), width, height)
}

impl Figure for Linear<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, self.0.len().max(1)));
        for (area, panel) in areas.iter().zip(self.0) {
            let all =
                || panel.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
            let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
            if x0 > x1 || y0 > y1 {
                continue;
            }
            let pad = ((y1 - y0) * 0.05).max(1e-9);
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc(&panel.x_label)
                .y_desc(&panel.y_label)
                .label_style(("sans-serif", 13))
                .draw()?;
            for (i, s) in panel.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
        Ok(())
    }
}

/// One heatmap: `values[row][column]`, coloured from 0 (white) to `max` (dark).
pub struct Heatmap {
    pub title: String,
    pub rows: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub max: f64,
}

struct Heatmaps<'a>(&'a [Heatmap], usize);

/// Writes `maps` in a grid of `columns` to `stem.svg` and `stem.png`.
pub fn heatmaps(stem: &Path, maps: &[Heatmap], columns: usize, width: u32, height: u32) -> Result<()> {
    write_svg_png(stem, &Heatmaps(maps, columns.max(1)), width, height)
}

impl Figure for Heatmaps<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let rows = self.0.len().div_ceil(self.1);
        let areas = root.split_evenly((rows, self.1));
        for (area, map) in areas.iter().zip(self.0) {
            let n_cols = map.values.first().map_or(0, |r| r.len()).max(1);
            let n_rows = map.values.len().max(1);
            // Segmented axes put each label at the centre of its row or column.
            let mut chart = ChartBuilder::on(area)
                .caption(&map.title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d((0..n_cols - 1).into_segmented(), (0..n_rows - 1).into_segmented())?;
            let labels = map.rows.clone();
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("expert")
                .x_labels(n_cols.min(16))
                .y_labels(n_rows)
                .x_label_formatter(&|c| match c {
                    SegmentValue::CenterOf(c) => c.to_string(),
                    _ => String::new(),
                })
                .y_label_formatter(&|r| match r {
                    SegmentValue::CenterOf(r) => labels.get(*r).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .label_style(("sans-serif", 12))
                .draw()?;
            chart.draw_series(map.values.iter().enumerate().flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(c, &v)| {
                    let t = (v / map.max).clamp(0.0, 1.0);
                    let shade = |full: f64| (255.0 - t * (255.0 - full)) as u8;
                    let corners = [
                        (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                    ];
                    Rectangle::new(corners, RGBColor(shade(8.0), shade(48.0), shade(107.0)).filled())
                })
            }))?;
        }
        Ok(())
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let positive = || panel.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0 > 0.0 && p.1 > 0.0);
        let (x0, x1) = positive().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = positive().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if x0 > x1 || y0 > y1 {
            continue; // nothing drawable on a log scale
        }
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x0 / 1.2..x1 * 1.2).log_scale(), (y0 / 3.0..y1 * 3.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, s) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}
