//! The suite's charts, as SVG (for the web) and PNG (for anything else).
//! PNG text is drawn with a bundled font, so no system font is needed.

use std::path::Path;

use plotters::prelude::*;

use super::Results;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 540);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of a chart: a server's medians over the x positions.
struct Series {
    name: String,
    points: Vec<(usize, f64)>,
}

/// Draws every chart into `dir`; returns the file stems written (each as
/// `.svg` and `.png`).
pub fn draw(dir: &Path, results: &Results) -> std::io::Result<Vec<String>> {
    // Registering twice (a second suite in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let mut written = Vec::new();
    let mut groups: Vec<(usize, usize)> = results
        .cells
        .iter()
        .filter(|cell| cell.section == "closed")
        .map(|cell| (cell.message_size, cell.pipeline))
        .collect();
    groups.dedup();
    for (size, pipeline) in groups {
        let cells: Vec<_> = results
            .cells
            .iter()
            .filter(|cell| {
                cell.section == "closed" && cell.message_size == size && cell.pipeline == pipeline
            })
            .collect();
        let labels: Vec<String> = cells
            .iter()
            .map(|cell| cell.connections.to_string())
            .collect();
        let series = results
            .servers
            .iter()
            .map(|server| Series {
                name: server.clone(),
                points: cells
                    .iter()
                    .enumerate()
                    .filter_map(|(x, cell)| {
                        cell.servers
                            .iter()
                            .find(|samples| &samples.server == server)
                            .map(|samples| (x, samples.median))
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let stem = format!("closed-{size}B-pipeline{pipeline}");
        let title = format!("Closed loop, {size} B messages, pipeline {pipeline}: messages/s");
        chart(dir, &stem, &title, "connections", &labels, &series)?;
        written.push(stem);
    }
    Ok(written)
}

fn chart(
    dir: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    labels: &[String],
    series: &[Series],
) -> std::io::Result<()> {
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    plot(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        title,
        x_label,
        labels,
        series,
    )?;
    plot(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        title,
        x_label,
        labels,
        series,
    )
}

fn plot<B: DrawingBackend>(
    area: DrawingArea<B, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    labels: &[String],
    series: &[Series],
) -> std::io::Result<()> {
    let fail =
        |err: &dyn std::fmt::Debug| std::io::Error::other(format!("plotting failed: {err:?}"));
    area.fill(&WHITE).map_err(|e| fail(&e))?;
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(labels.len() as f64 - 0.5), 0.0..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_labels(labels.len())
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 {
                labels.get(index as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<(f64, f64)> = line.points.iter().map(|&(x, y)| (x as f64, y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(line.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    area.present().map_err(|e| fail(&e))
}
