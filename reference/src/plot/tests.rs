//! Tests of every figure kind and of the shared axis and colour helpers.

use super::heatmap::{DIVERGING_BLUE, DIVERGING_RED, MISSING};
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
    let bars = Bars { title: "none".into(), y_label: "bytes".into(), bars: vec![("zero".into(), 0.0)], log_y: true };
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
