//! SVG bar charts (plotters, SVG backend only): one bar per category and
//! series at the median, with a whisker from the minimum to the maximum.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::Spread;

const WIDTH: u32 = 820;
const HEIGHT: u32 = 420;
const COLORS: [RGBColor; 4] = [RGBColor(66, 113, 174), RGBColor(230, 140, 50), RGBColor(80, 160, 90), RGBColor(170, 70, 70)];

/// A chart: `categories` along x, one bar per series in each.
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub categories: Vec<String>,
    /// Series name and one value per category (`None`: no bar).
    pub series: Vec<(String, Vec<Option<Spread>>)>,
}

/// Draws `bars` into the SVG file `path`.
pub fn draw(path: &Path, bars: &Bars) -> anyhow::Result<()> {
    draw_inner(path, bars).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

fn draw_inner(path: &Path, bars: &Bars) -> Result<(), Box<dyn std::error::Error>> {
    let values = bars.series.iter().flat_map(|(_, v)| v.iter().flatten());
    let (lo, hi) = values.fold((0f64, 0f64), |(lo, hi), s| (lo.min(s.min), hi.max(s.max)));
    let span = (hi - lo).max(1.0);
    // Headroom for the value labels, and for the legend with several series.
    let room = if bars.series.len() > 1 { 0.35 } else { 0.12 };
    let (y0, y1) = (if lo < 0.0 { lo - 0.1 * span } else { 0.0 }, hi + room * span);
    let n = bars.categories.len();

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(bars.title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(34)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, y0..y1)?;
    // Category names are drawn below each group (x is a plain number axis).
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .light_line_style(WHITE)
        .y_label_formatter(&|v| label(*v))
        .y_desc(bars.y_label)
        .label_style(("sans-serif", 12))
        .draw()?;
    let below = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in bars.categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, y0));
        root.draw(&Text::new(name.as_str(), (x, y + 8), below.clone()))?;
    }

    let groups = bars.series.len().max(1) as f64;
    let width = 0.7 / groups;
    for (s, (name, values)) in bars.series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let left = |i: usize| i as f64 - 0.35 + s as f64 * width;
        let boxes =
            values.iter().enumerate().filter_map(|(i, v)| v.map(|v| Rectangle::new([(left(i), 0.0), (left(i) + width * 0.9, v.median)], color.filled())));
        let drawn = chart.draw_series(boxes)?;
        if bars.series.len() > 1 {
            drawn.label(name.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        let whiskers = values.iter().enumerate().filter_map(|(i, v)| {
            v.map(|v| {
                let mid = left(i) + width * 0.45;
                let cap = width * 0.15;
                PathElement::new(
                    vec![(mid - cap, v.min), (mid + cap, v.min), (mid, v.min), (mid, v.max), (mid - cap, v.max), (mid + cap, v.max)],
                    BLACK.stroke_width(1),
                )
            })
        });
        chart.draw_series(whiskers)?;
        let labels = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| Text::new(label(v.median), (left(i), v.max.max(v.median) + 0.02 * (y1 - y0)), ("sans-serif", 11).into_font())));
        chart.draw_series(labels)?;
    }
    if bars.series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn label(x: f64) -> String {
    if x.abs() >= 100.0 || x == x.round() {
        crate::stats::number(x, 0)
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_its_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        let s = |m: f64| Some(Spread { median: m, min: m - 1.0, max: m + 1.0, n: 3 });
        draw(
            &path,
            &Bars {
                title: "req/s",
                y_label: "requests per second",
                categories: vec!["none".into(), "sluice-local".into()],
                series: vec![("p50".into(), vec![s(30_000.0), None]), ("p99".into(), vec![s(10.0), s(-3.0)])],
            },
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.80}");
        for text in ["sluice-local", "30,000", "p99", "requests per second"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
