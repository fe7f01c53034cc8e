//! The suite's charts, as SVG (for the web) and PNG (for anything else).
//! PNG text is drawn with a bundled font, so no system font is needed.

use std::path::Path;

use plotters::prelude::*;

use super::offload::{Figures, Offload, Spread};
use super::plan::Section;
use super::report::decimals_by;
use super::results::Results;

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

/// Makes the bundled font the charts' sans-serif. Registering twice (a
/// second suite in one process) is harmless.
fn register_font() {
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
}

/// One line of a chart: a server's medians over the x positions.
struct Series {
    name: String,
    points: Vec<(usize, f64)>,
}

/// Draws every chart into `dir`; returns the file stems written (each as
/// `.svg` and `.png`).
pub fn draw(dir: &Path, results: &Results) -> std::io::Result<Vec<String>> {
    register_font();
    let mut written = Vec::new();
    let mut groups: Vec<(usize, usize)> = results
        .cells
        .iter()
        .filter(|cell| cell.section == Section::Closed)
        .map(|cell| (cell.message_size, cell.pipeline))
        .collect();
    groups.dedup();
    for (size, pipeline) in groups {
        let cells: Vec<_> = results
            .cells
            .iter()
            .filter(|cell| {
                cell.section == Section::Closed
                    && cell.message_size == size
                    && cell.pipeline == pipeline
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
        let stem = format!("{}-{size}B-pipeline{pipeline}", Section::Closed);
        let title = format!("Closed loop, {size} B messages, pipeline {pipeline}: messages/s");
        chart(dir, &stem, &title, "connections", &labels, &series)?;
        written.push(stem);
    }
    if let Some(offload) = &results.offload {
        written.push(offload_chart(dir, offload)?);
    }
    Ok(written)
}

/// The chart file of the offload section, without its extension.
pub const OFFLOAD_CHART: &str = Section::Offload.as_str();

/// One panel of a bar chart: a bar per variant at its median, with a
/// whisker from its min to its max.
struct Panel {
    title: &'static str,
    bars: Vec<(String, Spread)>,
    /// A logarithmic axis, for figures that differ by orders of magnitude.
    log: bool,
}

/// The offload section's chart: light p99 and heavy MiB/s per variant,
/// side by side; returns its stem.
fn offload_chart(dir: &Path, offload: &Offload) -> std::io::Result<String> {
    let panel = |title, log, figure: fn(&Figures<Spread>) -> Spread| Panel {
        title,
        log,
        bars: offload
            .variants
            .iter()
            .map(|variant| (variant.name.clone(), figure(&variant.figures)))
            .collect(),
    };
    let panels = [
        // Inline and offloaded light tails are orders of magnitude apart.
        panel("light p99, ms, log scale (lower is better)", true, |f| {
            f.light_p99_ms
        }),
        panel("heavy MiB/s (higher is better)", false, |f| {
            f.heavy_mib_per_sec
        }),
    ];
    let title = format!(
        "Offload: light {} clients beside heavy {} ones, {} µs of work per KiB",
        offload.light.size(),
        offload.heavy.size(),
        offload.work_us_per_kib
    );
    let svg = dir.join(format!("{OFFLOAD_CHART}.svg"));
    let png = dir.join(format!("{OFFLOAD_CHART}.png"));
    bars(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        &title,
        &panels,
    )?;
    bars(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        &title,
        &panels,
    )?;
    Ok(OFFLOAD_CHART.to_owned())
}

/// Bar charts side by side under one `title`, one per panel.
fn bars<B: DrawingBackend>(
    area: DrawingArea<B, plotters::coord::Shift>,
    title: &str,
    panels: &[Panel],
) -> std::io::Result<()> {
    area.fill(&WHITE).map_err(plot_error)?;
    let titled = area.titled(title, ("sans-serif", 20)).map_err(plot_error)?;
    for (pane, panel) in titled.split_evenly((1, panels.len())).iter().zip(panels) {
        let count = panel.bars.len();
        // On a log axis, bars are drawn as powers of ten from a bottom a
        // decade below the smallest value.
        let scale = Scale::for_panel(panel);
        let y = |value: f64| scale.y(value);
        let top = panel
            .bars
            .iter()
            .map(|(_, spread)| y(spread.max.max(spread.median)))
            .fold(scale.bottom, f64::max);
        // An empty panel still gets an axis.
        let top = if top > scale.bottom {
            scale.bottom + (top - scale.bottom) * 1.15
        } else {
            scale.bottom + 1.0
        };
        let mut chart = ChartBuilder::on(pane)
            .caption(panel.title, ("sans-serif", 16))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            // A range of n values makes n segments: the last bar's index
            // ends it.
            .build_cartesian_2d((0..count.max(1) - 1).into_segmented(), scale.bottom..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(count)
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(index) => panel
                    .bars
                    .get(*index)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| scale.label(*y, top))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(panel.bars.iter().enumerate().map(|(index, (_, spread))| {
                let color = COLORS[index % COLORS.len()];
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(index), scale.bottom),
                        (SegmentValue::Exact(index + 1), y(spread.median)),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(panel.bars.iter().enumerate().map(|(index, (_, spread))| {
                PathElement::new(
                    vec![
                        (SegmentValue::CenterOf(index), y(spread.min)),
                        (SegmentValue::CenterOf(index), y(spread.max)),
                    ],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(plot_error)?;
    }
    titled.present().map_err(plot_error)
}

/// A panel's y axis: linear from 0, or the log10 of the values from a
/// bottom a decade under the smallest.
struct Scale {
    log: bool,
    bottom: f64,
}

impl Scale {
    fn for_panel(panel: &Panel) -> Scale {
        if !panel.log {
            return Scale {
                log: false,
                bottom: 0.0,
            };
        }
        let smallest = panel
            .bars
            .iter()
            .flat_map(|(_, spread)| [spread.min, spread.median])
            .filter(|value| *value > 0.0)
            .fold(f64::INFINITY, f64::min);
        let bottom = if smallest.is_finite() {
            smallest.log10().floor() - 1.0
        } else {
            0.0
        };
        Scale { log: true, bottom }
    }

    /// Where `value` goes on the axis; on a log axis, a value of 0 or less
    /// sits on the bottom.
    fn y(&self, value: f64) -> f64 {
        if !self.log {
            value
        } else if value > 0.0 {
            value.log10().max(self.bottom)
        } else {
            self.bottom
        }
    }

    /// The label of axis position `y`, on an axis up to `top`.
    fn label(&self, y: f64, top: f64) -> String {
        if !self.log {
            return tick(y, top);
        }
        // Powers of ten only: 0.01, 0.1, 1, 10, 100.
        if (y - y.round()).abs() > 1e-9 {
            return String::new();
        }
        let value = 10f64.powf(y.round());
        if value >= 1.0 {
            format!("{value:.0}")
        } else {
            format!("{value}")
        }
    }
}

/// A y-axis label with as many decimals as an axis up to `top` needs.
fn tick(value: f64, top: f64) -> String {
    decimals_by(value, top, 10.0)
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
    area.fill(&WHITE).map_err(plot_error)?;
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
        .map_err(plot_error)?;
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
        .map_err(plot_error)?;
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<(f64, f64)> = line.points.iter().map(|&(x, y)| (x as f64, y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
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
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_error)?;
    area.present().map_err(plot_error)
}

/// A plotting backend's error as an I/O error.
fn plot_error(err: impl std::fmt::Debug) -> std::io::Error {
    std::io::Error::other(format!("plotting failed: {err:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offload_chart_is_written_as_svg_and_png() {
        register_font();
        let dir = tempfile::tempdir().unwrap();
        let section = super::super::offload::section_of(&[
            ("inline", 8.0, 9.0),
            ("spawn-blocking", 3.0, 8.0),
            ("compute-1", 1.0, 5.0),
            ("compute-2", 1.5, 9.5),
        ]);
        let stem = offload_chart(dir.path(), &section).unwrap();
        assert_eq!(stem, OFFLOAD_CHART);
        let svg = std::fs::read_to_string(dir.path().join("offload.svg")).unwrap();
        assert!(svg.contains("spawn-blocking"), "the bars are labelled");
        assert!(dir.path().join("offload.png").metadata().unwrap().len() > 0);
    }
}
