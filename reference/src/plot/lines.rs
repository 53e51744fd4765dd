//! Line and scatter charts: panels side by side on linear, log-y or log-log axes.

use super::{font, log_axis, number, padded_range, DrawResult, Figure, COLORS, LABEL, TICK, TITLE};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
