//! Bar charts: one labelled bar per entry, its value printed above it.

use super::{font, log_axis, number, padded_range, DrawResult, Figure, COLORS, LABEL, TICK, TITLE};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One bar per entry, labelled below and with its value printed above.
#[derive(Debug, Clone)]
pub struct Bars {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<(String, f64)>,
    /// A log axis, for values that span orders of magnitude (bars at or below 0 are left out).
    pub log_y: bool,
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
