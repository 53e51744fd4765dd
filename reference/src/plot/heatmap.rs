//! Heatmaps on a sequential or diverging colour scale, each with a labelled colour bar.

use super::{font, number, DrawResult, Figure, LABEL, TICK, TITLE};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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

const WHITE_RGB: RGBColor = RGBColor(255, 255, 255);
/// ColorBrewer "Blues": light to dark without passing through grey.
const BLUES: [RGBColor; 5] =
    [WHITE_RGB, RGBColor(198, 219, 239), RGBColor(107, 174, 214), RGBColor(33, 113, 181), RGBColor(8, 48, 107)];
/// The ends of ColorBrewer "RdBu".
pub(super) const DIVERGING_BLUE: RGBColor = RGBColor(33, 102, 172);
pub(super) const DIVERGING_RED: RGBColor = RGBColor(178, 24, 43);
/// Cells without a value (NaN).
pub(super) const MISSING: RGBColor = RGBColor(190, 190, 190);

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
