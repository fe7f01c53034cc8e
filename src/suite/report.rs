//! The suite's markdown report: one table per measurement, medians with
//! their min-max range, and the ratios the comparison is about.

use std::fmt::Write;

use super::{Cell, Results};

/// The report for `results`, linking the `charts` drawn beside it.
pub fn markdown(results: &Results, charts: &[String]) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let p = &results.plan;
    let _ = writeln!(out, "# tandem suite: {}\n", results.name);
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), kernel {}; load average {} before, {} after.\n",
        m.cores, m.cpu, m.kernel, m.loadavg_before, m.loadavg_after
    );
    let _ = writeln!(
        out,
        "Each figure is the median of {} samples (min-max beside it). Every sample \
         starts a fresh server; within a cell the servers take turns. Windows of \
         {:.1} s after {:.1} s of warm-up; the load generator runs on one thread \
         on the same machine.\n",
        p.runs, p.duration_secs, p.warmup_secs
    );
    for (section, title) in [
        ("closed", "Closed loop: messages per second"),
        (
            "open",
            "Open loop: latency at a fraction of each server's maximum",
        ),
        ("churn", "Churn: connections per second"),
        (
            "isolation",
            "Isolation: new connections while the workers are saturated",
        ),
        ("memory", "Memory: resident bytes per idle connection"),
    ] {
        let cells: Vec<&Cell> = results
            .cells
            .iter()
            .filter(|c| c.section == section)
            .collect();
        if cells.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {title}\n");
        table(&mut out, &cells, section == "closed");
    }
    let errors: u64 = results
        .cells
        .iter()
        .flat_map(|cell| cell.servers.iter().map(|samples| samples.errors()))
        .sum();
    let _ = writeln!(
        out,
        "Load generator errors over the whole suite: {errors}.\n"
    );
    if !charts.is_empty() {
        let _ = writeln!(out, "## Plots\n");
        for chart in charts {
            let _ = writeln!(out, "![{chart}]({chart}.svg)\n");
        }
    }
    out
}

fn table(out: &mut String, cells: &[&Cell], ratios: bool) {
    let Some(first) = cells.first() else { return };
    let servers: Vec<&str> = first.servers.iter().map(|s| s.server.as_str()).collect();
    let _ = write!(out, "| load ({}) |", first.metric);
    for server in &servers {
        let _ = write!(out, " {server} |");
    }
    if ratios {
        let _ = write!(
            out,
            " split / single | sharded / single | best tandem / epoll |"
        );
    }
    let _ = writeln!(out);
    let columns = servers.len() + if ratios { 3 } else { 0 };
    let _ = writeln!(out, "|---|{}", "---:|".repeat(columns));
    for cell in cells {
        let _ = write!(out, "| {} |", cell.label);
        for samples in &cell.servers {
            let _ = write!(
                out,
                " {} ({}-{}) |",
                round(samples.median),
                round(samples.min),
                round(samples.max)
            );
        }
        if ratios {
            let median = |name: &str| {
                cell.servers
                    .iter()
                    .find(|s| s.server == name)
                    .map(|s| s.median)
            };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".to_owned(),
            };
            let best = ["single", "split", "sharded"]
                .iter()
                .filter_map(|name| median(name))
                .fold(None, |best: Option<f64>, v| {
                    Some(best.map_or(v, |b| b.max(v)))
                });
            let _ = write!(
                out,
                " {} | {} | {} |",
                ratio(median("split"), median("single")),
                ratio(median("sharded"), median("single")),
                ratio(best, median("epoll"))
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

fn round(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{Sample, Samples};

    fn cell(medians: &[(&str, f64)]) -> Cell {
        Cell {
            section: "closed",
            label: "64 B x 50 conns, pipeline 1".to_owned(),
            metric: "msgs/s",
            message_size: 64,
            connections: 50,
            pipeline: 1,
            fraction: None,
            servers: medians
                .iter()
                .map(|&(server, value)| Samples {
                    server: server.to_owned(),
                    median: value,
                    min: value,
                    max: value,
                    samples: vec![Sample {
                        value,
                        report: None,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn closed_loop_rows_carry_the_ratios_the_comparison_is_about() {
        let cell = cell(&[
            ("single", 100.0),
            ("split", 80.0),
            ("sharded", 120.0),
            ("epoll", 200.0),
        ]);
        let mut out = String::new();
        table(&mut out, &[&cell], true);
        let row = out.lines().nth(2).unwrap();
        assert!(row.ends_with("| 0.80 | 1.20 | 0.60 |"), "{row}");
    }
}
