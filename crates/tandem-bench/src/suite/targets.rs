//! Where each of tandem's layouts stands against the peers, from the
//! peers section's cells: the figures that section is judged by.
//!
//! - read syscalls per echoed 64 B message, against [`READS_TARGET`];
//! - server CPU per message, over the epoll reference's;
//! - messages per second over the best peer's (epoll included), at each
//!   load of small and medium messages;
//! - at [`LARGE_MESSAGE`] and above, messages per second over the epoll
//!   reference's, which reads 64 KiB at once;
//! - resident bytes per idle connection.
//!
//! Every ratio divides medians. A figure is absent (`None`), never zero,
//! where a side of it was not measured.

use serde::Serialize;

use super::cells::Cell;
use super::cells::{BYTES_PER_CONN, MSGS_PER_SEC};
use super::cost::{CPU_METRIC, Counter, READS_METRIC};
use super::peers::Skipped;
use super::plan::Section;

/// Read syscalls per echoed message a layout should stay within: one read
/// per message, and a tenth for the reads that find the socket empty.
pub const READS_TARGET: f64 = 1.1;
/// Messages from this size up are compared with the epoll reference
/// rather than the best peer.
pub const LARGE_MESSAGE: usize = 16 * 1024;
/// The peer every layout's CPU and large messages are held against.
pub const EPOLL: &str = "epoll";

/// The peers section's outcome, in `results.json` as `peers`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// tandem's layouts, as named in the section's cells.
    pub layouts: Vec<String>,
    /// The peers measured, the epoll reference first.
    pub peers: Vec<String>,
    /// Peers that could not run here.
    pub skipped: Vec<Skipped>,
    /// How syscalls and CPU were counted.
    pub counted: Counter,
    /// One entry per layout.
    pub targets: Vec<LayoutTargets>,
}

/// Where one layout stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayoutTargets {
    pub layout: String,
    /// Read syscalls per echoed 64 B message (target: at most
    /// `READS_TARGET`).
    pub reads_per_msg: Option<f64>,
    /// Server CPU per message over the epoll reference's.
    pub cpu_vs_epoll: Option<f64>,
    /// Messages per second over a peer's, one per closed-loop load.
    pub throughput: Vec<VsPeer>,
    /// Resident bytes per idle connection.
    pub idle_bytes_per_conn: Option<f64>,
}

/// A layout's messages per second at one load over a peer's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VsPeer {
    /// The load, as the cell labels it.
    pub load: String,
    /// The peer divided by: the best at this load, or epoll for large
    /// messages.
    pub peer: String,
    pub ratio: f64,
}

/// Compares each of `layouts` with `peers` over the peers section's
/// `cells` (other sections' cells are ignored).
pub fn compare(
    cells: &[Cell],
    layouts: &[String],
    peers: &[String],
    skipped: Vec<Skipped>,
    counted: Counter,
) -> Comparison {
    let cells: Vec<&Cell> = cells
        .iter()
        .filter(|cell| cell.section == Section::Peers)
        .collect();
    let find = |metric: &str| cells.iter().copied().find(|cell| cell.metric == metric);
    let targets = layouts
        .iter()
        .map(|layout| LayoutTargets {
            layout: layout.clone(),
            reads_per_msg: find(READS_METRIC).and_then(|cell| median(cell, layout)),
            cpu_vs_epoll: find(CPU_METRIC).and_then(|cell| ratio(cell, layout, EPOLL)),
            throughput: cells
                .iter()
                .filter(|cell| cell.metric == MSGS_PER_SEC)
                .filter_map(|cell| {
                    let peer = if cell.message_size >= LARGE_MESSAGE {
                        Some(EPOLL.to_owned())
                    } else {
                        best(cell, peers)
                    }?;
                    Some(VsPeer {
                        load: cell.label.clone(),
                        ratio: ratio(cell, layout, &peer)?,
                        peer,
                    })
                })
                .collect(),
            idle_bytes_per_conn: find(BYTES_PER_CONN).and_then(|cell| median(cell, layout)),
        })
        .collect();
    Comparison {
        layouts: layouts.to_vec(),
        peers: peers.to_vec(),
        skipped,
        counted,
        targets,
    }
}

/// `server`'s median in `cell`.
pub fn median(cell: &Cell, server: &str) -> Option<f64> {
    cell.servers
        .iter()
        .find(|samples| samples.server == server)
        .map(|samples| samples.median)
}

/// `over`'s median over `under`'s, if both were measured and the divisor
/// is not 0.
fn ratio(cell: &Cell, over: &str, under: &str) -> Option<f64> {
    let (over, under) = (median(cell, over)?, median(cell, under)?);
    (under > 0.0).then(|| over / under)
}

/// The peer of `peers` with the highest median in `cell`.
fn best(cell: &Cell, peers: &[String]) -> Option<String> {
    peers
        .iter()
        .filter_map(|peer| Some((peer, median(cell, peer)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(peer, _)| peer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::cells::single_samples;

    fn cell(metric: &'static str, size: usize, medians: &[(&str, f64)]) -> Cell {
        Cell {
            section: Section::Peers,
            label: format!("{size} B x 50 conns"),
            metric,
            message_size: size,
            connections: 50,
            pipeline: 1,
            fraction: None,
            servers: single_samples(medians),
            ratio: None,
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn small_messages_are_held_against_the_best_peer_and_large_ones_against_epoll() {
        let cells = [
            cell(
                "msgs/s",
                64,
                &[("split", 90.0), ("epoll", 100.0), ("actix", 120.0)],
            ),
            cell(
                "msgs/s",
                16384,
                &[("split", 45.0), ("epoll", 50.0), ("actix", 80.0)],
            ),
        ];
        let comparison = compare(
            &cells,
            &names(&["split"]),
            &names(&["epoll", "actix"]),
            Vec::new(),
            Counter::Perf,
        );
        let throughput = &comparison.targets[0].throughput;
        assert_eq!(
            (throughput[0].peer.as_str(), throughput[0].ratio),
            ("actix", 0.75)
        );
        assert_eq!(
            (throughput[1].peer.as_str(), throughput[1].ratio),
            ("epoll", 0.9)
        );
    }

    #[test]
    fn reads_cpu_and_memory_come_from_their_cells() {
        let cells = [
            cell(READS_METRIC, 64, &[("single", 1.02), ("epoll", 2.0)]),
            cell(CPU_METRIC, 64, &[("single", 15.0), ("epoll", 10.0)]),
            cell("bytes/conn", 16, &[("single", 1400.0), ("epoll", 300.0)]),
        ];
        let comparison = compare(
            &cells,
            &names(&["single"]),
            &names(&["epoll"]),
            Vec::new(),
            Counter::Perf,
        );
        let single = &comparison.targets[0];
        assert_eq!(single.reads_per_msg, Some(1.02));
        assert_eq!(single.cpu_vs_epoll, Some(1.5));
        assert_eq!(single.idle_bytes_per_conn, Some(1400.0));
    }

    #[test]
    fn figures_not_measured_are_absent() {
        // No syscall counts (no perf), and epoll's CPU never measured.
        let cells = [cell(CPU_METRIC, 64, &[("sharded", 12.0)])];
        let comparison = compare(
            &cells,
            &names(&["sharded"]),
            &names(&["epoll"]),
            Vec::new(),
            Counter::Proc {
                why: "no perf".to_owned(),
            },
        );
        let sharded = &comparison.targets[0];
        assert_eq!(sharded.reads_per_msg, None);
        assert_eq!(sharded.cpu_vs_epoll, None);
        assert!(sharded.throughput.is_empty());
    }
}
