//! Gantt charts of simulated schedules in the style of DeepSeek-V3's Figure 5: one row per
//! device, forward chunks orange, full backward green, backward for inputs light green,
//! backward for weights blue, an overlapped forward and backward half orange half green
//! inside one black border; each cell carries its micro-batch, except those of DualPipe's
//! reverse direction, which the figure leaves unnumbered ("symmetric to those in the forward
//! direction").

use super::{Interval, Op, Timeline};
use crate::plot::{DrawResult, Figure};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A timeline drawn as a Gantt chart.
#[derive(Debug, Clone)]
pub struct Gantt<'a> {
    pub title: String,
    pub timeline: &'a Timeline,
}

const FORWARD: RGBColor = RGBColor(245, 176, 65);
const BACKWARD: RGBColor = RGBColor(126, 211, 33);
const BACKWARD_INPUT: RGBColor = RGBColor(184, 233, 134);
const WEIGHT: RGBColor = RGBColor(116, 185, 255);
const LEGEND: [(&str, RGBColor); 4] = [
    ("Forward", FORWARD),
    ("Backward", BACKWARD),
    ("Backward for input", BACKWARD_INPUT),
    ("Backward for weights", WEIGHT),
];

/// The cell's colour and its label (empty for direction 1).
fn fill(op: &Op) -> (RGBColor, String) {
    let number = |c: &super::Chunk| if c.direction == 0 { c.micro_batch.to_string() } else { String::new() };
    match op {
        Op::Forward { chunk } => (FORWARD, number(chunk)),
        Op::Backward { chunk } => (BACKWARD, number(chunk)),
        Op::BackwardInput { chunk } => (BACKWARD_INPUT, number(chunk)),
        Op::BackwardWeight { chunk } => (WEIGHT, number(chunk)),
        Op::ForwardBackward { .. } => (BACKWARD, String::new()),
    }
}

impl Figure for Gantt<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 22).into_font().color(&BLACK))?;
        let (chart_area, legend) = area.split_vertically(area.dim_in_pixel().1.saturating_sub(40));
        let ranks = self.timeline.ranks.len().max(1);
        let makespan = self.timeline.makespan().max(f64::MIN_POSITIVE);
        let mut chart = ChartBuilder::on(&chart_area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..makespan, 0.0..ranks as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time")
            .y_labels(0)
            .label_style(("sans-serif", 14).into_font())
            .axis_desc_style(("sans-serif", 16).into_font())
            .draw()?;
        let label_style = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
        for (rank, intervals) in self.timeline.ranks.iter().enumerate() {
            // Device 0 on top, as in the figure.
            let (top, bottom) = ((ranks - rank) as f64 - 0.05, (ranks - rank - 1) as f64 + 0.05);
            // Beside the axis, outside the plotting area (which clips what is drawn in it).
            let (x, y) = chart.backend_coord(&(0.0, (top + bottom) / 2.0));
            let device = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(format!("Device {rank}"), (x - 6, y), device))?;
            for Interval { op, start, end } in intervals {
                let (color, label) = fill(op);
                if let Op::ForwardBackward { forward, backward } = op {
                    // Half orange, half green, one border: the two chunks overlap.
                    let middle = (start + end) / 2.0;
                    chart.draw_series([
                        Rectangle::new([(*start, bottom), (middle, top)], FORWARD.filled()),
                        Rectangle::new([(middle, bottom), (*end, top)], BACKWARD.filled()),
                    ])?;
                    let halves = [(forward, (start + middle) / 2.0), (backward, (middle + end) / 2.0)];
                    for (chunk, x) in halves.into_iter().filter(|(c, _)| c.direction == 0) {
                        let text =
                            Text::new(chunk.micro_batch.to_string(), (x, (top + bottom) / 2.0), label_style.clone());
                        chart.draw_series(std::iter::once(text))?;
                    }
                } else {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(*start, bottom), (*end, top)],
                        color.filled(),
                    )))?;
                }
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(*start, bottom), (*end, top)],
                    BLACK.stroke_width(1),
                )))?;
                if !label.is_empty() {
                    chart.draw_series(std::iter::once(Text::new(
                        label,
                        ((start + end) / 2.0, (top + bottom) / 2.0),
                        label_style.clone(),
                    )))?;
                }
            }
        }
        let mut x = 90;
        let entries = LEGEND.iter().map(|&(name, color)| (name, vec![color]));
        let overlapped = std::iter::once(("Overlapped forward & backward", vec![FORWARD, BACKWARD]));
        for (name, colors) in entries.chain(overlapped) {
            for (i, color) in colors.iter().enumerate() {
                let left = x + 12 * i as i32;
                legend.draw(&Rectangle::new([(left, 10), (left + 12, 28)], color.filled()))?;
            }
            let right = x + 12 * colors.len() as i32;
            legend.draw(&Rectangle::new([(x, 10), (right, 28)], BLACK.stroke_width(1)))?;
            let style = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
            let width = legend.estimate_text_size(name, &style)?.0 as i32;
            legend.draw(&Text::new(name, (right + 6, 19), style))?;
            x = right + 6 + width + 24;
        }
        Ok(())
    }
}
