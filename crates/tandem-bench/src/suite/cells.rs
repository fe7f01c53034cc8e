//! A suite's figures: cells of samples. A cell is one load measured on
//! each server; every section makes cells, and the report, the charts and
//! the peers' targets read them. This module measures nothing and imports
//! nothing of the suite but the [`Section`] a cell belongs to and the
//! [`Cost`] a sample may carry.

use serde::Serialize;

use super::cost::Cost;
use super::plan::Section;
use crate::bench::Report;

/// The metric of a cell of messages per second.
pub const MSGS_PER_SEC: &str = "msgs/s";
/// The metric of a cell of resident bytes per idle connection.
pub const BYTES_PER_CONN: &str = "bytes/conn";

/// One load, measured on each server.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The measurement the cell belongs to.
    pub section: Section,
    /// What was loaded, for tables: e.g. `64 B x 50 conns, pipeline 1`.
    pub label: String,
    /// What `value` is: e.g. `msgs/s`, `p99 µs`, `bytes/conn`.
    pub metric: &'static str,
    pub message_size: usize,
    pub connections: usize,
    pub pipeline: usize,
    /// Open loop: fraction of each server's maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    pub servers: Vec<Samples>,
    /// Sections that compare a pair (admin, tls, udp): one server's median
    /// over the other's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratio>,
}

/// One single-sample `Samples` per `(server, value)`: the figures of a
/// cell built by hand, for the tests of what reads cells.
#[cfg(test)]
pub(crate) fn single_samples(medians: &[(&str, f64)]) -> Vec<Samples> {
    medians
        .iter()
        .map(|&(server, value)| Samples {
            server: server.to_owned(),
            median: value,
            min: value,
            max: value,
            samples: vec![Sample::value(value)],
        })
        .collect()
}

impl Cell {
    /// A closed-loop cell: messages per second at (message size,
    /// connections, pipeline), without a ratio.
    pub(super) fn closed_loop(
        section: Section,
        label: String,
        (message_size, connections, pipeline): (usize, usize, usize),
        servers: Vec<Samples>,
    ) -> Cell {
        Cell {
            section,
            label,
            metric: MSGS_PER_SEC,
            message_size,
            connections,
            pipeline,
            fraction: None,
            servers,
            ratio: None,
        }
    }
}

/// A ratio of two servers' medians in a cell.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    /// What is divided by what: `on / off`, `TLS / plain`, `UDP / TCP`.
    pub of: &'static str,
    pub value: f64,
}

impl Ratio {
    /// `samples[over].median / samples[under].median`, if both exist and
    /// the divisor is not 0.
    pub(super) fn of(
        of: &'static str,
        samples: &[Samples],
        over: usize,
        under: usize,
    ) -> Option<Ratio> {
        let (over, under) = (samples.get(over)?.median, samples.get(under)?.median);
        (under > 0.0).then(|| Ratio {
            of,
            value: over / under,
        })
    }
}

/// One server's samples of a cell.
#[derive(Debug, Clone, Serialize)]
pub struct Samples {
    pub server: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<Sample>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub value: f64,
    /// The generator's report, when the load generator made the sample;
    /// against a tandem server it carries the server's own figures
    /// (`report.server`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// Admin section: scrapes of `/metrics` made during the sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrapes: Option<u64>,
    /// Peers section: what the server spent over the sample's run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

impl Sample {
    /// A bare value, measured without the load generator.
    pub fn value(value: f64) -> Sample {
        Sample {
            value,
            report: None,
            scrapes: None,
            cost: None,
        }
    }
}

impl Samples {
    pub(super) fn of(server: &str, samples: Vec<Sample>) -> Samples {
        let mut values: Vec<f64> = samples.iter().map(|sample| sample.value).collect();
        values.sort_by(f64::total_cmp);
        Samples {
            server: server.to_owned(),
            median: median(values.clone()).unwrap_or(0.0),
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
            samples,
        }
    }

    /// Generator errors over all samples.
    pub fn errors(&self) -> u64 {
        self.samples
            .iter()
            .filter_map(|sample| sample.report.as_ref())
            .map(|report| report.errors)
            .sum()
    }
}

/// The median of `values`; `None` when there are none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Samples {
        let taken = values.iter().map(|&value| Sample::value(value)).collect();
        Samples::of("s", taken)
    }

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        let s = samples(&[30.0, 10.0, 20.0]);
        assert_eq!((s.median, s.min, s.max), (20.0, 10.0, 30.0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(samples(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
    }
}
