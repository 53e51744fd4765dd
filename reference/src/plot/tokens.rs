//! Text as a strip of tokens, each on a background that says something about it: which
//! tokens of a generation were MTP drafts the main model kept, say. Drawn as SVG directly
//! (monospace text wrapped at the width), not through plotters.

use super::Svg;
use crate::error::Result;

/// One class of token: its legend label and background colour (`#rrggbb`).
#[derive(Debug, Clone)]
pub struct TokenClass {
    pub label: String,
    pub color: String,
}

#[derive(Debug, Clone)]
pub struct TokenStrip {
    pub title: String,
    pub classes: Vec<TokenClass>,
    /// Each token's text and the index of its class.
    pub tokens: Vec<(String, usize)>,
}

const CHAR_W: f64 = 8.4;
const LINE_H: f64 = 22.0;
const FONT: &str = "font-family=\"DejaVu Sans Mono, monospace\" font-size=\"14\"";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What a token shows: newlines and tabs as visible marks; a token of spaces only as
/// middle dots (spaces inside text stay spaces).
fn visible(s: &str) -> String {
    let s = s.replace('\n', "⏎").replace('\t', "⇥");
    if !s.is_empty() && s.chars().all(|c| c == ' ') {
        "·".repeat(s.len())
    } else {
        s
    }
}

impl TokenStrip {
    /// The strip `width` pixels wide (as tall as its lines need).
    pub fn svg(&self, width: u32) -> Svg {
        let (left, top) = (10.0, 58.0);
        let right = width as f64 - 10.0;
        let (mut x, mut y) = (left, top);
        let mut body = String::new();
        for (text, class) in &self.tokens {
            let shown = visible(text);
            let w = CHAR_W * shown.chars().count().max(1) as f64;
            if x + w > right && x > left {
                (x, y) = (left, y + LINE_H);
            }
            let color = self.classes.get(*class).map_or("#ffffff", |c| c.color.as_str());
            body += &format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\" stroke=\"#ffffff\" stroke-width=\"0.5\"/>\
                 <text x=\"{x:.1}\" y=\"{y:.1}\" {FONT} xml:space=\"preserve\">{}</text>\n",
                y - 15.0,
                LINE_H - 2.0,
                escape(&shown)
            );
            x += w;
        }
        let mut legend = String::new();
        let mut lx = left;
        for c in &self.classes {
            legend += &format!(
                "<rect x=\"{lx:.1}\" y=\"28\" width=\"14\" height=\"14\" fill=\"{}\" stroke=\"#888\"/>\
                 <text x=\"{:.1}\" y=\"40\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"13\">{}</text>\n",
                c.color,
                lx + 20.0,
                escape(&c.label)
            );
            lx += 40.0 + 7.5 * c.label.chars().count() as f64;
        }
        let height = y + 14.0;
        Svg(format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height:.0}\" viewBox=\"0 0 {width} {height:.0}\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
             <text x=\"{left}\" y=\"18\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"15\" font-weight=\"bold\">{}</text>\n\
             {legend}{body}</svg>\n",
            escape(&self.title)
        ))
    }

    /// Draws the strip inline in a notebook (as [`super::Figure::show`]).
    pub fn show(&self, width: u32) -> Result<()> {
        self.svg(width).evcxr_display();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_escapes_and_colours_each_token() {
        let strip = TokenStrip {
            title: "a <test>".into(),
            classes: vec![
                TokenClass { label: "main".into(), color: "#eeeeee".into() },
                TokenClass { label: "draft".into(), color: "#a6dba0".into() },
            ],
            tokens: (0..40).map(|i| (format!("t{i}&\n"), i % 2)).chain([("  ".to_string(), 0)]).collect(),
        };
        let svg = strip.svg(300).0;
        assert!(svg.contains("a &lt;test&gt;") && svg.contains("t3&amp;⏎") && svg.contains(">··</text>"));
        assert_eq!(svg.matches("fill=\"#a6dba0\"").count(), 20 + 1, "20 drafts and the legend");
        let height: f64 = svg.split("height=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(height > 58.0 + 5.0 * LINE_H, "40 tokens of 5 characters wrap onto many lines: {height}");
    }
}
