//! `loss.png` and `lr.png`: line plots of a run's metrics, drawn with plotters; and the title
//! strip over a reconstruction figure's columns.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Result, SaplingError};

/// DejaVu Sans (see `assets/fonts/DejaVuSans-LICENSE.txt`): plotters' bitmap backend needs a
/// font for axis labels, and a headless machine may have none installed.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const SIZE: (u32, u32) = (800, 400);

/// Draws `points` as a line with labelled axes and writes the PNG atomically.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
) -> Result<()> {
    lines_plot(path, title, x_label, y_label, &[("", points)])
}

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        // Registration fails only for an unparsable font, which include_bytes! rules out.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Height of the title strip above a figure's columns.
const TITLE_STRIP: u32 = 24;

/// `figure` with a strip above it naming its equal-width columns, so a picture opened on its own
/// says what each column is.
pub fn with_column_titles(figure: &image::RgbImage, titles: &[&str]) -> image::RgbImage {
    register_font();
    let (w, h) = figure.dimensions();
    let size = (w, h + TITLE_STRIP);
    let mut buffer = vec![255u8; (size.0 * size.1 * 3) as usize];
    buffer[(w * TITLE_STRIP * 3) as usize..].copy_from_slice(figure.as_raw());
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        let column = w / titles.len().max(1) as u32;
        let width = |title: &str, font: &TextStyle| {
            root.estimate_text_size(title, font).map_or(0, |(tw, _)| tw)
        };
        // The largest size at which every title fits its column (small images, narrow tiles).
        let font = (9..=14)
            .rev()
            .map(|px| ("sans-serif", px).into_font().color(&BLACK))
            .find(|font| titles.iter().all(|t| width(t, font) + 4 <= column))
            .unwrap_or_else(|| ("sans-serif", 9).into_font().color(&BLACK));
        for (i, title) in titles.iter().enumerate() {
            // Centred by hand from the measured width.
            let x = i as u32 * column + column.saturating_sub(width(title, &font)) / 2;
            // A title that cannot be drawn leaves the strip blank; the figure itself is intact.
            let _ = root.draw_text(title, &font, (x as i32, 5));
        }
        let _ = root.present();
    }
    image::RgbImage::from_raw(size.0, size.1, buffer).expect("buffer matches size")
}

/// Series with at most this many points are drawn with a marker on each.
const MARKED_POINTS: usize = 40;

/// One colour per series, in order.
const COLOURS: [RGBColor; 4] = [BLUE, RED, RGBColor(0, 140, 0), MAGENTA];

/// Draws each `(label, points)` as a line in one chart (with a legend when labelled) and writes
/// the PNG atomically.
pub fn lines_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, &[(f64, f64)])],
) -> Result<()> {
    register_font();
    let err = |e: String| SaplingError::Data {
        path: path.to_path_buf(),
        message: format!("cannot draw plot: {e}"),
    };
    let mut buffer = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        let finite: Vec<Vec<(f64, f64)>> = series
            .iter()
            .map(|(_, points)| {
                let finite = |(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
                points.iter().filter(finite).copied().collect()
            })
            .collect();
        let (x_max, mut y_min, mut y_max) = finite
            .iter()
            .flatten()
            .fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), p| {
                (x.max(p.0), lo.min(p.1), hi.max(p.1))
            });
        if finite.iter().all(Vec::is_empty) {
            (y_min, y_max) = (0.1, 1.0);
        }
        if y_max <= y_min {
            y_max = y_min + y_min.abs().max(1e-12);
        }
        // Small values (learning rates) read best in scientific notation.
        let y_format = move |y: &f64| {
            if y_max.abs() < 1e-2 {
                format!("{y:.2e}")
            } else {
                format!("{y:.3}")
            }
        };
        let mut chart = ChartBuilder::on(&root);
        chart
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            // Wide enough for "4.50e-5" and the axis name beside it.
            .y_label_area_size(72);
        let pad = (y_max - y_min) * 0.05;
        let mut c = chart
            .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
            .map_err(|e| err(e.to_string()))?;
        c.configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&y_format)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, ((label, _), points)) in series.iter().zip(finite).enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            // Few points get markers: a run logged once is a point no line would draw.
            if points.len() <= MARKED_POINTS {
                let dots = points.iter().map(|&p| Circle::new(p, 2, colour.filled()));
                c.draw_series(dots).map_err(|e| err(e.to_string()))?;
            }
            let drawn = c
                .draw_series(LineSeries::new(points, &colour))
                .map_err(|e| err(e.to_string()))?;
            if !label.is_empty() {
                drawn
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            }
        }
        if series.iter().any(|(label, _)| !label.is_empty()) {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, buffer).expect("buffer matches size");
    super::save_png(&img, path)
}

/// Redraws `loss.png` and `lr.png` in `out` from its `metrics.jsonl` (a step logged twice, before
/// and after a resume, keeps its last value).
pub fn plot_metrics(out: &Path) -> Result<()> {
    let by_step = read_metrics(out)?;
    let loss: Vec<_> = by_step.iter().map(|(s, (l, _))| (*s as f64, *l)).collect();
    let lr: Vec<_> = by_step.iter().map(|(s, (_, r))| (*s as f64, *r)).collect();
    line_plot(
        &out.join("loss.png"),
        "training loss (masked patches)",
        "step",
        "loss",
        &loss,
    )?;
    line_plot(&out.join("lr.png"), "learning rate", "step", "lr", &lr)
}

/// `step → (loss, lr)` from the `metrics.jsonl` of run folder `out`.
fn read_metrics(out: &Path) -> Result<std::collections::BTreeMap<u64, (f64, f64)>> {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| SaplingError::io(&path, e))?;
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(step), Some(loss), Some(lr)) =
                (v["step"].as_u64(), v["loss"].as_f64(), v["lr"].as_f64())
        {
            by_step.insert(step, (loss, lr));
        }
    }
    Ok(by_step)
}

/// The loss curves of several run folders in one PNG, each labelled with its folder's name
/// (`sapling plot`): runs that differ in one setting, compared at a glance.
pub fn compare_losses(runs: &[std::path::PathBuf], path: &Path) -> Result<()> {
    let names: Vec<String> = runs
        .iter()
        .map(|run| {
            run.file_name()
                .unwrap_or(run.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut curves: Vec<Vec<(f64, f64)>> = Vec::with_capacity(runs.len());
    for run in runs {
        let loss = read_metrics(run)?
            .into_iter()
            .map(|(s, (l, _))| (s as f64, l));
        curves.push(loss.collect());
    }
    let series: Vec<(&str, &[(f64, f64)])> = names
        .iter()
        .map(String::as_str)
        .zip(curves.iter().map(Vec::as_slice))
        .collect();
    lines_plot(
        path,
        "training loss (masked patches)",
        "step",
        "loss",
        &series,
    )
}
