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

/// Writes `panels` side by side to `stem.svg` and `stem.png` (width × height pixels).
pub fn log_log_panels(stem: &Path, panels: &[Panel], width: u32, height: u32) -> Result<()> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    {
        let root = SVGBackend::new(&svg, (width, height)).into_drawing_area();
        draw(&root, panels).map_err(|e| Error::file(&svg, e))?;
        root.present().map_err(|e| Error::file(&svg, e))?;
    }
    {
        let root = BitMapBackend::new(&png, (width, height)).into_drawing_area();
        draw(&root, panels).map_err(|e| Error::file(&png, e))?;
        root.present().map_err(|e| Error::file(&png, e))?;
    }
    Ok(())
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
