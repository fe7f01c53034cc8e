//! The suite's markdown report: one table per measurement, medians with
//! their min-max range, and the ratios the comparison is about; then what
//! the tandem servers' own metrics said about the same samples.

use std::fmt::Write;

use super::cells::{Cell, Samples};
use super::cells::{MSGS_PER_SEC, median};
use super::cost::Counter;
use super::offload::{Offload, Spread};
use super::plan::Section;
use super::results::Results;
use super::targets::{self, Comparison, LARGE_MESSAGE, READS_TARGET};
use crate::bench::server_metrics::ServerFigures;

/// The report for `results`, linking the `charts` drawn beside it.
pub fn markdown(results: &Results, charts: &[String]) -> String {
    let mut out = String::new();
    header(&mut out, results);
    for (section, title) in TABLES {
        let cells: Vec<&Cell> = results
            .cells
            .iter()
            .filter(|c| c.section == section)
            .collect();
        if !cells.is_empty() {
            measured(&mut out, section, title, &cells);
        }
    }
    if let Some(comparison) = &results.peers {
        peers(&mut out, comparison, &results.cells);
    }
    if let Some(section) = &results.offload {
        offload(&mut out, section);
    }
    server_side(&mut out, &results.servers, &results.cells);
    errors(&mut out, results);
    plots(&mut out, charts);
    out
}

/// The report's title, the machine, and how every figure was made.
fn header(out: &mut String, results: &Results) {
    let m = &results.machine;
    let p = &results.plan;
    let _ = writeln!(out, "# tandem suite: {}\n", results.name);
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), kernel {}; load average {} before, {} after.\n",
        m.cores, m.cpu, m.kernel, m.loadavg_before, m.loadavg_after
    );
    let placement = match &m.cpu_split {
        Some(split) => format!(
            "the load generator runs on one thread on CPU {} of the same machine, \
             and every server on CPU {}, servers at their defaults sizing \
             themselves to it (`--client-cpus`)",
            split.generator, split.servers
        ),
        None => "the load generator runs on one thread on the same machine, \
                 sharing its cores with the server"
            .to_owned(),
    };
    let _ = writeln!(
        out,
        "Each figure is the median of {} samples (min-max beside it). Every sample \
         starts a fresh server; within a cell the servers take turns. Windows of \
         {:.1} s after {:.1} s of warm-up; {placement}. tandem servers run with \
         their admin endpoint (`--admin-listen`), which the load generator \
         scrapes around each sample{}; the admin section measures what that \
         costs.\n",
        p.runs,
        p.duration_secs,
        p.warmup_secs,
        if results.peers.is_some() {
            ", but in the peers section"
        } else {
            ""
        },
    );
}

/// The sections reported as one table each, in the report's order, with
/// their titles.
const TABLES: [(Section, &str); 8] = [
    (Section::Closed, "Closed loop: messages per second"),
    (
        Section::Open,
        "Open loop: latency at a fraction of each server's maximum",
    ),
    (Section::Churn, "Churn: connections per second"),
    (
        Section::Isolation,
        "Isolation: new connections while the workers are saturated",
    ),
    (
        Section::Memory,
        "Memory: resident bytes per idle connection",
    ),
    (
        Section::Admin,
        "Observability: split with the admin endpoint off and on",
    ),
    (
        Section::Tls,
        "TLS: the layouts over TLS, beside split over plain TCP",
    ),
    (
        Section::Udp,
        "UDP: the layouts echoing datagrams, beside split over TCP",
    ),
];

/// What a section's table needs said before it, if anything.
fn note(section: Section) -> Option<&'static str> {
    match section {
        Section::Admin => Some(
            "On: `--admin-listen`, and `/metrics` scraped every second during the \
             sample, as a Prometheus server would; off: no admin endpoint (the \
             server still counts, as it always does, but nothing serves or \
             samples the figures). Samples alternate off, on, off, on.",
        ),
        Section::Tls => Some(
            "TLS 1.3 with a self-signed ECDSA P-256 certificate; the closed loop's \
             connections make their handshakes before the window, churn makes one \
             per request.",
        ),
        Section::Udp => Some(
            "Each client a UDP socket with one datagram in flight (`--udp-rate-limit` \
             raised out of the way); split (TCP) runs the same load over TCP \
             connections.",
        ),
        _ => None,
    }
}

/// One section of [`TABLES`]: its title, its note, its table of `cells`
/// (with the layouts' ratios in the closed loop), and the datagrams UDP
/// lost.
fn measured(out: &mut String, section: Section, title: &str, cells: &[&Cell]) {
    let _ = writeln!(out, "## {title}\n");
    if let Some(note) = note(section) {
        let _ = writeln!(out, "{note}\n");
    }
    table(out, cells, section == Section::Closed);
    if section == Section::Udp {
        let lost: u64 = cells
            .iter()
            .flat_map(|cell| &cell.servers)
            .flat_map(|samples| &samples.samples)
            .filter_map(|sample| sample.report.as_ref()?.lost)
            .sum();
        let _ = writeln!(out, "Datagrams lost over the section: {lost}.\n");
    }
}

/// The load generator's errors over every section.
fn errors(out: &mut String, results: &Results) {
    let errors: u64 = results
        .cells
        .iter()
        .flat_map(|cell| cell.servers.iter().map(|samples| samples.errors()))
        .sum::<u64>()
        + results.offload.as_ref().map_or(0, Offload::errors);
    let _ = writeln!(
        out,
        "Load generator errors over the whole suite: {errors}.\n"
    );
}

/// Links to the `charts`, if any were drawn.
fn plots(out: &mut String, charts: &[String]) {
    if charts.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Plots\n");
    for chart in charts {
        let _ = writeln!(out, "![{chart}]({chart}.svg)\n");
    }
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
    let ratio_of = cells
        .iter()
        .find_map(|cell| cell.ratio)
        .map(|ratio| ratio.of);
    if let Some(of) = ratio_of {
        let _ = write!(out, " {of} |");
    }
    let _ = writeln!(out);
    let columns = servers.len() + if ratios { 3 } else { 0 } + usize::from(ratio_of.is_some());
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
        if ratio_of.is_some() {
            let _ = write!(
                out,
                " {} |",
                cell.ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.3}", r.value))
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

/// What each peer is, for the peers section's notes.
const PEER_NOTES: [(&str, &str); 4] = [
    (
        "epoll",
        "the hand-written mio server of `examples/epoll_echo.rs`: a thread, an \
         epoll instance and a SO_REUSEPORT listener per thread, 64 KiB reads",
    ),
    (
        "article",
        "the article's `#[tokio::main]` server: one multi-thread runtime, a task \
         per connection, `read` then `write_all` through a 4 KiB buffer",
    ),
    (
        "actix",
        "actix-server: an accept thread dealing connections to a single-thread \
         worker runtime per thread, the same echo as `article`",
    ),
    (
        "monoio",
        "monoio over io_uring: a runtime and a SO_REUSEPORT listener per thread, \
         the same echo on buffers lent to the kernel",
    ),
];

/// The peers section: every figure of every server, then where each
/// layout stands against the peers.
fn peers(out: &mut String, comparison: &Comparison, cells: &[Cell]) {
    let cells: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.section == Section::Peers)
        .collect();
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Peers: tandem beside echo servers on other runtimes\n"
    );
    let _ = writeln!(
        out,
        "tandem's layouts run here without their admin endpoint, as the peers \
         have none. The peers, built from `bench/peers/` (but epoll):\n"
    );
    for (peer, note) in PEER_NOTES {
        let state = match comparison.skipped.iter().find(|s| s.server == peer) {
            Some(skipped) => format!(" **Skipped: {}.**", skipped.reason),
            None if comparison.peers.iter().any(|p| p == peer) => String::new(),
            None => " Not measured.".to_owned(),
        };
        let _ = writeln!(out, "- `{peer}`: {note}.{state}");
    }
    let _ = writeln!(out);
    let _ = match &comparison.counted {
        Counter::Perf => writeln!(
            out,
            "Syscalls and CPU per message: `perf stat` attached to the server over the \
             load generator's whole run at 64 B x 50 connections, without warm-up, \
             divided by the messages echoed in it. perf's counting of each syscall adds \
             a little to the CPU of the servers that make more of them.\n"
        ),
        Counter::Proc { why } => writeln!(
            out,
            "Syscalls were not counted ({why}). CPU per message: user plus system time \
             from `/proc/PID/stat` over the load generator's whole run at 64 B x 50 \
             connections, without warm-up, divided by the messages echoed in it.\n"
        ),
    };
    let servers: Vec<&str> = comparison
        .layouts
        .iter()
        .chain(&comparison.peers)
        .map(String::as_str)
        .collect();
    let _ = write!(out, "| measurement |");
    for server in &servers {
        let _ = write!(out, " {server} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(servers.len()));
    for cell in &cells {
        let _ = write!(out, "| {}: {} |", cell.metric, cell.label);
        for server in &servers {
            let entry = cell
                .servers
                .iter()
                .find(|s| s.server == *server)
                .map_or_else(
                    || "-".to_owned(),
                    |s| format!("{} ({}-{})", figure(s.median), figure(s.min), figure(s.max)),
                );
            let _ = write!(out, " {entry} |");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    standing(out, comparison, &cells);
}

/// One row per layout: its figures against the targets and the peers.
fn standing(out: &mut String, comparison: &Comparison, cells: &[&Cell]) {
    let loads: Vec<&Cell> = cells
        .iter()
        .copied()
        .filter(|cell| cell.metric == MSGS_PER_SEC)
        .collect();
    let _ = writeln!(out, "### Where each layout stands\n");
    let _ = writeln!(
        out,
        "Ratios of medians. Messages per second are divided by the best peer's at \
         each load (named beside the ratio), and by epoll's from {LARGE_MESSAGE} B \
         messages up. Above 1 the layout is ahead, but for CPU, where below 1 it \
         spends less.\n"
    );
    let _ = write!(
        out,
        "| layout | read syscalls/msg (target ≤ {READS_TARGET}) | CPU/msg ÷ {} |",
        targets::EPOLL
    );
    for cell in &loads {
        let _ = write!(out, " msgs/s, {} |", cell.label);
    }
    let _ = writeln!(out, " idle bytes/conn |");
    let _ = writeln!(out, "|---|{}", "---:|".repeat(loads.len() + 3));
    for layout in &comparison.targets {
        let reads = layout.reads_per_msg.map_or_else(
            || "-".to_owned(),
            |reads| {
                let mark = if reads <= READS_TARGET { "✓" } else { "✗" };
                format!("{} {mark}", figure(reads))
            },
        );
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let _ = write!(
            out,
            "| {} | {reads} | {} |",
            layout.layout,
            ratio(layout.cpu_vs_epoll)
        );
        for cell in &loads {
            let entry = layout
                .throughput
                .iter()
                .find(|vs| vs.load == cell.label)
                .map_or_else(
                    || "-".to_owned(),
                    |vs| format!("{:.2} ({})", vs.ratio, vs.peer),
                );
            let _ = write!(out, " {entry} |");
        }
        let idle = layout
            .idle_bytes_per_conn
            .map_or_else(|| "-".to_owned(), round);
        let _ = writeln!(out, " {idle} |");
    }
    let _ = writeln!(out);
}

/// The offload section: what was loaded, then one row per variant.
fn offload(out: &mut String, section: &Offload) {
    let (light, heavy) = (&section.light, &section.heavy);
    let work_us = |bytes: usize| section.work_us_per_kib as f64 * bytes as f64 / 1024.0;
    let _ = writeln!(
        out,
        "## Offload: light clients beside heavy ones, the work inline or on other threads\n"
    );
    let _ = writeln!(
        out,
        "Every variant is `tandem serve --layout split {}` with its own flags:\n",
        section.common_flags.join(" ")
    );
    for variant in &section.variants {
        let _ = writeln!(out, "- `{}`: `{}`", variant.name, variant.flags.join(" "));
    }
    let _ = writeln!(
        out,
        "\nEach sample loads one server with two groups at once, over the same \
         warm-up and window. Light: {} connections sending {} messages in the open \
         loop, {} a second in all, each timed from when it was due. Heavy: {} \
         connections sending {} messages in the closed loop, {} in flight each. \
         The server burns {} µs of CPU per KiB of each chunk it reads: {} ms for a \
         heavy message, {} µs for a light one, which stays under `--offload-above` \
         and so on the serving thread. Latencies in ms; server CPU is the CPU \
         seconds its threads used per second of the window (user plus system, from \
         `/proc`), that is the cores it kept busy; busy is each runtime's busy ratio \
         over the window, from the metrics the light group scraped (coarse over \
         windows of a few seconds, as the server adds busy time up once a second; \
         `spawn-blocking`'s jobs run on tokio's blocking pool, which no runtime's \
         busy time counts). The last column divides each variant's light p99 by \
         inline's.\n",
        light.connections,
        light.size(),
        light
            .rate
            .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}")),
        heavy.connections,
        heavy.size(),
        heavy.pipeline,
        section.work_us_per_kib,
        figure(work_us(heavy.message_size) / 1e3),
        figure(work_us(light.message_size)),
    );
    let _ = writeln!(
        out,
        "| variant | light p50 ms | light p99 ms | light p99.9 ms | light msgs/s \
         | heavy MiB/s | server CPU s/s | busy (window) | light p99 ÷ inline |"
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(8));
    let spread = |s: Spread| format!("{} ({}-{})", figure(s.median), figure(s.min), figure(s.max));
    for variant in &section.variants {
        let f = &variant.figures;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            variant.name,
            spread(f.light_p50_ms),
            spread(f.light_p99_ms),
            spread(f.light_p999_ms),
            spread(f.light_msgs_per_sec),
            spread(f.heavy_mib_per_sec),
            spread(f.server_cpu_per_sec),
            busy(
                variant
                    .samples
                    .iter()
                    .filter_map(|s| s.light.server.as_ref())
            ),
            variant
                .light_p99_vs_inline
                .map_or_else(|| "-".to_owned(), small_ratio),
        );
    }
    let _ = writeln!(out);
}

/// The median busy ratio of each runtime that serves or computes (not the
/// acceptor's nor the admin endpoint's) over `scraped`:
/// `worker 0.97, compute 1.00`.
fn busy<'a>(scraped: impl Iterator<Item = &'a ServerFigures>) -> String {
    let mut ratios: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for figures in scraped {
        for (runtime, &ratio) in &figures.window.busy_ratio {
            if runtime != "acceptor" && runtime != "admin" {
                ratios.entry(runtime).or_default().push(ratio);
            }
        }
    }
    let shown: Vec<String> = ratios
        .into_iter()
        .filter_map(|(runtime, values)| Some(format!("{runtime} {:.2}", median(values)?)))
        .collect();
    if shown.is_empty() {
        "-".to_owned()
    } else {
        shown.join(", ")
    }
}

/// A ratio to two decimals, or to two significant digits below 0.1, where
/// two decimals would round a 200-fold gain to 0.00.
fn small_ratio(value: f64) -> String {
    if value > 0.0 && value < 0.1 {
        let decimals = (1.0 - value.log10().floor()) as usize;
        format!("{value:.decimals$}")
    } else {
        format!("{value:.2}")
    }
}

/// A figure to three significant digits or so: per-message counts need
/// their decimals, rates do not.
fn figure(value: f64) -> String {
    decimals_by(value, value, 100.0)
}

/// `value` with as many decimals as a figure read on the scale of `scale`
/// (the value itself, or the top of a chart's axis) needs: none from
/// `whole_from` up, one from a tenth of it, else two.
pub(super) fn decimals_by(value: f64, scale: f64, whole_from: f64) -> String {
    let decimals = if scale >= whole_from {
        0
    } else if scale >= whole_from / 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}")
}

/// The servers' own figures, one row per cell whose samples carry them,
/// one column per tandem server.
fn server_side(out: &mut String, servers: &[String], cells: &[Cell]) {
    let cells: Vec<&Cell> = cells
        .iter()
        .filter(|cell| cell.servers.iter().any(|s| figures(s).next().is_some()))
        .collect();
    let servers: Vec<&str> = servers
        .iter()
        .map(String::as_str)
        .filter(|name| {
            cells.iter().any(|cell| {
                cell.servers
                    .iter()
                    .any(|s| s.server == *name && figures(s).next().is_some())
            })
        })
        .collect();
    if cells.is_empty() || servers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Server side: what the tandem servers' metrics say\n"
    );
    let _ = writeln!(
        out,
        "From each sample's scrapes of `/metrics`, medians over the samples: \
         acceptor busy / worker busy (sharded: the shards' mean), then the p99 of \
         the wait from accept to serving. Busy ratios cover the measured window; \
         the server adds up busy time once a second, so over windows of a few \
         seconds they are coarse. Hand-off waits cover every connection of the \
         sample, those opened before the window included.\n"
    );
    let _ = write!(out, "| load |");
    for server in &servers {
        let _ = write!(out, " {server} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(servers.len()));
    for cell in cells {
        let label = match cell.section {
            Section::Isolation => {
                format!("{}: the churn probe beside saturated workers", cell.section)
            }
            section => format!("{section}: {}", cell.label),
        };
        let _ = write!(out, "| {label} |");
        for server in &servers {
            let samples = cell.servers.iter().find(|s| s.server == *server);
            let _ = write!(out, " {} |", samples.map_or_else(|| "-".to_owned(), entry));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

/// The server figures of `samples`' samples.
fn figures(samples: &Samples) -> impl Iterator<Item = &ServerFigures> {
    samples
        .samples
        .iter()
        .filter_map(|sample| sample.report.as_ref()?.server.as_ref())
}

/// `acceptor / worker busy, p99 µs` for one server's samples of a cell.
fn entry(samples: &Samples) -> String {
    let of = |value: fn(&ServerFigures) -> Option<f64>| {
        median(figures(samples).filter_map(value).collect())
    };
    let acceptor = of(|f| f.window.busy_ratio.get("acceptor").copied());
    let workers = of(|f| {
        let busy = &f.window.busy_ratio;
        busy.get("worker").copied().or_else(|| {
            let shards: Vec<f64> = busy
                .iter()
                .filter(|(runtime, _)| runtime.starts_with("shard-"))
                .map(|(_, &ratio)| ratio)
                .collect();
            (!shards.is_empty()).then(|| shards.iter().sum::<f64>() / shards.len() as f64)
        })
    });
    let wait = of(|f| f.run.handoff_wait_us.map(|wait| wait.p99));
    if acceptor.is_none() && workers.is_none() && wait.is_none() {
        return "-".to_owned();
    }
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    format!(
        "{} / {}, {}",
        ratio(acceptor),
        ratio(workers),
        wait.map_or_else(|| "-".to_owned(), |w| format!("{} µs", round(w)))
    )
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
    use crate::suite::cells::single_samples;
    use crate::suite::{Ratio, Sample};

    #[test]
    fn figures_and_axis_ticks_take_their_decimals_from_their_scale() {
        assert_eq!(figure(1234.5), "1234");
        assert_eq!(figure(12.34), "12.3");
        assert_eq!(figure(1.234), "1.23");
        // A tick takes the decimals of the axis's top, not its own.
        assert_eq!(decimals_by(5.0, 50.0, 10.0), "5");
        assert_eq!(decimals_by(0.5, 5.0, 10.0), "0.5");
        assert_eq!(decimals_by(0.5, 0.9, 10.0), "0.50");
    }

    #[test]
    fn small_ratios_keep_two_significant_digits() {
        assert_eq!(small_ratio(1.0), "1.00");
        assert_eq!(small_ratio(0.07), "0.070");
        assert_eq!(small_ratio(0.0044), "0.0044");
        assert_eq!(small_ratio(0.25), "0.25");
        assert_eq!(small_ratio(0.0), "0.00");
    }

    fn cell(medians: &[(&str, f64)]) -> Cell {
        Cell {
            section: Section::Closed,
            label: "64 B x 50 conns, pipeline 1".to_owned(),
            metric: "msgs/s",
            message_size: 64,
            connections: 50,
            pipeline: 1,
            fraction: None,
            servers: single_samples(medians),
            ratio: None,
        }
    }

    #[test]
    fn admin_rows_carry_the_on_off_ratio() {
        let mut cell = cell(&[("split (admin off)", 100.0), ("split (admin on)", 97.0)]);
        cell.section = Section::Admin;
        cell.ratio = Some(Ratio {
            of: "on / off",
            value: 0.97,
        });
        let mut out = String::new();
        table(&mut out, &[&cell], false);
        let header = out.lines().next().unwrap();
        assert!(
            header.ends_with("| split (admin on) | on / off |"),
            "{header}"
        );
        let row = out.lines().nth(2).unwrap();
        assert!(row.ends_with("| 97.0 (97.0-97.0) | 0.970 |"), "{row}");
    }

    /// A sample against `server` whose scrapes gave these busy ratios and
    /// hand-off wait p99.
    fn scraped(busy: &[(&str, f64)], p99: f64) -> Sample {
        use crate::bench::Latency;
        use crate::bench::server_metrics::{RunFigures, WaitQuantiles, WindowFigures};
        let server = ServerFigures {
            url: "http://127.0.0.1:9/metrics".to_owned(),
            window: WindowFigures {
                secs: 1.0,
                busy_ratio: busy.iter().map(|&(r, v)| (r.to_owned(), v)).collect(),
                bytes_received: 0,
                bytes_sent: 0,
            },
            run: RunFigures {
                connections_accepted: 1,
                connections_rejected: 0,
                connections_closed: Default::default(),
                accept_errors: 0,
                udp_datagrams: Default::default(),
                tls_handshake_errors: Default::default(),
                handoffs: 1,
                handoff_wait_us: Some(WaitQuantiles { p50: p99, p99 }),
            },
            notes: Vec::new(),
        };
        let latency = Latency {
            p50: 1,
            p90: 1,
            p99: 1,
            p999: 1,
            max: 1,
        };
        let report = crate::bench::Report {
            server: Some(server),
            ..crate::bench::Report::fixture(latency, 1.0, 64.0)
        };
        Sample {
            report: Some(report),
            ..Sample::value(1.0)
        }
    }

    #[test]
    fn server_side_entries_are_medians_with_the_shards_averaged() {
        let mut cell = cell(&[("sharded", 1.0), ("epoll", 1.0)]);
        cell.servers[0].samples = vec![
            scraped(
                &[("acceptor", 0.1), ("shard-0", 0.4), ("shard-1", 0.6)],
                30.0,
            ),
            scraped(
                &[("acceptor", 0.3), ("shard-0", 0.8), ("shard-1", 1.0)],
                10.0,
            ),
            scraped(
                &[("acceptor", 0.2), ("shard-0", 0.6), ("shard-1", 0.8)],
                20.0,
            ),
        ];
        let mut out = String::new();
        server_side(
            &mut out,
            &["sharded".to_owned(), "epoll".to_owned()],
            &[cell],
        );
        let header = out.lines().find(|line| line.starts_with("| load")).unwrap();
        assert_eq!(header, "| load | sharded |", "the reference has no metrics");
        let row = out
            .lines()
            .find(|line| line.starts_with("| closed"))
            .unwrap();
        assert!(row.ends_with("| 0.20 / 0.70, 20.0 µs |"), "{row}");
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

    /// The peers section of a run where monoio could not start.
    fn peers_run() -> (Comparison, Vec<Cell>) {
        let mut throughput = cell(&[("split", 90.0), ("epoll", 100.0), ("actix", 120.0)]);
        throughput.section = Section::Peers;
        let mut reads = cell(&[("split", 1.02), ("epoll", 2.0), ("actix", 1.5)]);
        (reads.section, reads.metric, reads.label) = (
            Section::Peers,
            crate::suite::cost::READS_METRIC,
            "64 B x 50 conns, no warm-up".to_owned(),
        );
        let cells = vec![throughput, reads];
        let comparison = targets::compare(
            &cells,
            &["split".to_owned()],
            &["epoll".to_owned(), "actix".to_owned()],
            vec![crate::suite::Skipped {
                server: "monoio".to_owned(),
                reason: "io_uring unavailable: cannot set up a ring: Operation not permitted"
                    .to_owned(),
            }],
            Counter::Perf,
        );
        (comparison, cells)
    }

    #[test]
    fn the_peers_section_says_why_a_peer_was_skipped_and_leaves_it_out_of_the_tables() {
        let (comparison, cells) = peers_run();
        let mut out = String::new();
        peers(&mut out, &comparison, &cells);
        assert!(
            out.contains(
                "**Skipped: io_uring unavailable: cannot set up a ring: Operation not permitted.**"
            ),
            "{out}"
        );
        let header = out
            .lines()
            .find(|line| line.starts_with("| measurement"))
            .unwrap();
        assert_eq!(header, "| measurement | split | epoll | actix |");
        let reads = out
            .lines()
            .find(|line| line.starts_with("| read syscalls/msg"))
            .unwrap();
        assert_eq!(
            reads,
            "| read syscalls/msg: 64 B x 50 conns, no warm-up | 1.02 (1.02-1.02) \
             | 2.00 (2.00-2.00) | 1.50 (1.50-1.50) |"
        );
    }

    #[test]
    fn each_layout_stands_against_the_read_target_and_the_best_peer() {
        let (comparison, cells) = peers_run();
        let mut out = String::new();
        peers(&mut out, &comparison, &cells);
        let row = out
            .lines()
            .find(|line| line.starts_with("| split |"))
            .unwrap();
        assert_eq!(row, "| split | 1.02 ✓ | - | 0.75 (actix) | - |");
    }

    #[test]
    fn the_offload_section_has_a_row_per_variant_with_its_p99_over_inlines() {
        let section =
            crate::suite::offload::section_of(&[("inline", 8.0, 9.0), ("compute-2", 2.0, 9.5)]);
        let mut out = String::new();
        offload(&mut out, &section);
        assert!(
            out.contains("`tandem serve --layout split --workers 2 --simulate-work 200us/KiB`"),
            "{out}"
        );
        assert!(
            out.contains("12.8 ms for a heavy message, 12.5 µs for a light one"),
            "{out}"
        );
        let rows: Vec<&str> = out
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| variant"))
            .collect();
        assert_eq!(
            rows,
            [
                "| inline | 2.00 (2.00-2.00) | 8.00 (8.00-8.00) | 16.0 (16.0-16.0) \
                 | 2000 (2000-2000) | 9.00 (9.00-9.00) | 1.50 (1.50-1.50) | - | 1.00 |",
                "| compute-2 | 0.50 (0.50-0.50) | 2.00 (2.00-2.00) | 4.00 (4.00-4.00) \
                 | 2000 (2000-2000) | 9.50 (9.50-9.50) | 1.50 (1.50-1.50) | - | 0.25 |",
            ]
        );
    }

    #[test]
    fn offload_busy_shows_the_serving_and_computing_runtimes_medians() {
        let samples = [
            scraped(&[("acceptor", 0.0), ("worker", 0.2), ("compute", 0.9)], 1.0),
            scraped(&[("acceptor", 0.0), ("worker", 0.4), ("compute", 1.0)], 1.0),
            scraped(&[("acceptor", 0.0), ("worker", 0.3), ("compute", 0.8)], 1.0),
        ];
        let scraped = samples
            .iter()
            .filter_map(|sample| sample.report.as_ref()?.server.as_ref());
        assert_eq!(busy(scraped), "compute 0.90, worker 0.30");
        assert_eq!(busy(std::iter::empty()), "-");
    }
}
