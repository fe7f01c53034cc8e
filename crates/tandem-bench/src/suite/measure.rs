//! The measurements of a suite, each a list of cells; a cell is one load,
//! sampled `runs` times on every server, the servers interleaved.

use std::path::Path;
use std::time::Duration;

use super::cells::{BYTES_PER_CONN, Cell, Ratio, Sample, Samples};
use super::certificate::Certificate;
use super::cost::{self, Counter};
use super::error::SuiteError;
use super::peers::{Peers, Skipped};
use super::plan::{Plan, Section};
use super::scraper::Scraper;
use super::servers::{RunningServer, ServerSpec};
use super::targets::{self, Comparison};
use crate::bench::{self, BenchError, BenchOptions, Report};
use tandem::duration::HumanDuration;

/// The cell whose median throughput is each server's "maximum" for the
/// open-loop rates: 64 B messages over 50 connections.
const MAX_CELL: (usize, usize, usize) = (64, 50, 1);
/// Concurrent churners.
const CHURNERS: usize = 4;
/// CPU burnt per chunk by a server in the isolation test: with 50 busy
/// connections it keeps every worker of a small machine saturated.
const ISOLATION_WORK: &str = "500us";
/// The loads of the admin section, closed loop: (message size,
/// connections). Small messages make the per-read metrics cost show most;
/// large ones are where bytes are counted in bulk.
const ADMIN_LOADS: [(usize, usize); 2] = [(64, 50), (16 * 1024, 50)];
/// How often the admin section scrapes a server with its endpoint on:
/// more often than the 15 s to 1 min Prometheus is usually set to, so that
/// the cost, if any, shows.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// `--udp-rate-limit` of the UDP section's servers: its highest, so that
/// the limit (100 a second per source by default) is not what is measured.
const UDP_RATE_LIMIT: &str = "1000000";
/// The peers section's load for syscalls and CPU per message: 64 B
/// messages over 50 connections, where a server's cost per message is
/// least hidden behind copying.
const COST_LOAD: (usize, usize) = (64, 50);

/// Runs `sample` `runs` times per server, interleaving the servers, each
/// sample on a freshly started server.
fn interleave(
    servers: &[ServerSpec],
    runs: usize,
    sample: impl FnMut(usize, &RunningServer) -> Result<Sample, SuiteError>,
) -> Result<Vec<Samples>, SuiteError> {
    let taken = take_turns(servers, runs, sample)?;
    Ok(servers
        .iter()
        .zip(taken)
        .map(|(spec, samples)| Samples::of(&spec.name, samples))
        .collect())
}

/// What [`interleave`] does, for samples of any kind: `runs` of them per
/// server, in turns, each on a freshly started server; one list per
/// server, in the order of `servers`.
pub(super) fn take_turns<T>(
    servers: &[ServerSpec],
    runs: usize,
    mut sample: impl FnMut(usize, &RunningServer) -> Result<T, SuiteError>,
) -> Result<Vec<Vec<T>>, SuiteError> {
    let mut taken: Vec<Vec<T>> = servers.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (index, spec) in servers.iter().enumerate() {
            let running = spec.start()?;
            let result = sample(index, &running);
            running.stop();
            taken[index].push(result?);
        }
    }
    Ok(taken)
}

/// The plan's window against `server`, scraping its metrics if it has an
/// admin endpoint.
pub(super) fn load(plan: &Plan, server: &RunningServer) -> BenchOptions {
    BenchOptions {
        duration: HumanDuration(Duration::from_secs_f64(plan.duration_secs)),
        warmup: HumanDuration(Duration::from_secs_f64(plan.warmup_secs)),
        server_metrics: server.metrics_url(),
        ..BenchOptions::new(server.addr)
    }
}

fn bench_sample(
    server: &str,
    options: &BenchOptions,
    value: impl Fn(&Report) -> f64,
) -> Result<Sample, SuiteError> {
    let report = bench::run(options, false).map_err(|cause| SuiteError::Bench {
        server: server.to_owned(),
        cause,
    })?;
    Ok(Sample {
        value: value(&report),
        report: Some(report),
        ..Sample::value(0.0)
    })
}

/// The report of a load generator run made on a thread of its own against
/// `server`, or why there is none; `run` names the run if it panicked.
pub(super) fn joined(
    server: String,
    run: &str,
    outcome: std::thread::Result<Result<Report, BenchError>>,
) -> Result<Report, SuiteError> {
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(cause)) => Err(SuiteError::Bench { server, cause }),
        Err(_) => Err(SuiteError::Panicked {
            thread: run.to_owned(),
        }),
    }
}

pub(super) fn progress(what: &str) {
    eprintln!("suite: {what}");
}

/// Every measurement of `plan`, in order; the peers section's with
/// `peers`, which are given when it is to run.
pub fn all(
    plan: &Plan,
    servers: &[ServerSpec],
    peers: Option<&PeerLineup>,
) -> Result<Vec<Cell>, SuiteError> {
    let mut cells = loops(plan, servers)?;
    for (section, measure) in SECTIONS {
        if plan.runs(section) {
            cells.extend(measure(plan, servers)?);
        }
    }
    if let Some(lineup) = peers {
        cells.extend(peers_section(plan, lineup)?);
    }
    Ok(cells)
}

/// A section measured on the suite's servers as they are given.
type Measurement = fn(&Plan, &[ServerSpec]) -> Result<Vec<Cell>, SuiteError>;

/// The sections that run after the closed and open loops, in order.
const SECTIONS: [(Section, Measurement); 6] = [
    (Section::Churn, churn),
    (Section::Isolation, isolation),
    (Section::Memory, memory),
    (Section::Admin, admin),
    (Section::Tls, tls),
    (Section::Udp, udp),
];

/// The closed loop, and the open loop at fractions of each server's
/// maximum, which comes from one closed-loop cell (measured alone when
/// the closed loop does not run).
fn loops(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    let mut cells = Vec::new();
    if plan.runs(Section::Closed) {
        cells = closed(plan, servers)?;
    } else if plan.runs(Section::Open) {
        // The open loop's rates come from this one closed-loop cell.
        let mut only_max = plan.clone();
        (
            only_max.message_sizes,
            only_max.connections,
            only_max.pipelines,
        ) = (vec![MAX_CELL.0], vec![MAX_CELL.1], vec![MAX_CELL.2]);
        cells = closed(&only_max, servers)?;
    }
    if plan.runs(Section::Open) {
        let maxima: Vec<f64> = cells
            .iter()
            .find(|cell| (cell.message_size, cell.connections, cell.pipeline) == MAX_CELL)
            .or(cells.first())
            .map(|cell| cell.servers.iter().map(|samples| samples.median).collect())
            .unwrap_or_default();
        cells.extend(open(plan, servers, &maxima)?);
    }
    Ok(cells)
}

fn closed(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    let mut cells = Vec::new();
    for &pipeline in &plan.pipelines {
        for &size in &plan.message_sizes {
            for &connections in &plan.connections {
                let label = format!("{size} B x {connections} conns, pipeline {pipeline}");
                progress(&format!("closed loop: {label}"));
                cells.push(closed_cell(
                    plan,
                    Section::Closed,
                    label,
                    servers,
                    (size, connections, pipeline),
                    |_, options| {
                        if connections > 1000 {
                            options.connect_rate = Some(20_000.0);
                        }
                    },
                )?);
            }
        }
    }
    Ok(cells)
}

/// Messages per second on each of `servers` at one closed-loop `load`
/// (message size, connections, pipeline), as a cell of `section` under
/// `label`; `speak` adjusts the load for each server.
fn closed_cell(
    plan: &Plan,
    section: Section,
    label: String,
    servers: &[ServerSpec],
    (size, connections, pipeline): (usize, usize, usize),
    speak: impl Fn(usize, &mut BenchOptions),
) -> Result<Cell, SuiteError> {
    let samples = interleave(servers, plan.runs, |index, running| {
        let mut options = load(plan, running);
        options.message_size = size;
        options.connections = connections;
        options.pipeline = pipeline;
        speak(index, &mut options);
        bench_sample(&servers[index].name, &options, |report| report.msgs_per_sec)
    })?;
    Ok(Cell::closed_loop(
        section,
        label,
        (size, connections, pipeline),
        samples,
    ))
}

fn open(plan: &Plan, servers: &[ServerSpec], maxima: &[f64]) -> Result<Vec<Cell>, SuiteError> {
    let mut cells = Vec::new();
    for &fraction in &plan.open_fractions {
        let label = format!(
            "64 B x 50 conns at {:.0}% of each server's maximum",
            fraction * 100.0
        );
        progress(&format!("open loop: {label}"));
        let samples = interleave(servers, plan.runs, |index, running| {
            let mut options = load(plan, running);
            options.rate = Some((maxima.get(index).copied().unwrap_or(1000.0) * fraction).max(1.0));
            bench_sample(&servers[index].name, &options, |report| {
                report.latency_us.p99 as f64
            })
        })?;
        cells.push(Cell {
            section: Section::Open,
            label,
            metric: "p99 µs",
            message_size: 64,
            connections: 50,
            pipeline: 1,
            fraction: Some(fraction),
            servers: samples,
            ratio: None,
        });
    }
    Ok(cells)
}

fn churn(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    Ok(vec![churn_cell(plan, Section::Churn, servers, |_, _| {})?])
}

/// The churn cell of `section`, `speak` adjusting the load for each server.
fn churn_cell(
    plan: &Plan,
    section: Section,
    servers: &[ServerSpec],
    speak: impl Fn(usize, &mut BenchOptions),
) -> Result<Cell, SuiteError> {
    progress(&format!("{section}: churn"));
    let samples = interleave(servers, plan.runs, |index, running| {
        let mut options = load(plan, running);
        options.churn = true;
        options.connections = CHURNERS;
        speak(index, &mut options);
        bench_sample(&servers[index].name, &options, |report| {
            report.connects_per_sec.unwrap_or(0.0)
        })
    })?;
    Ok(Cell {
        section,
        label: format!("new connection per 64 B request, {CHURNERS} at a time"),
        metric: "connects/s",
        message_size: 64,
        connections: CHURNERS,
        pipeline: 1,
        fraction: None,
        servers: samples,
        ratio: None,
    })
}

/// New connections while the workers are saturated: the article's claim
/// that a separate acceptor keeps the server responsive, put to the test.
fn isolation(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    progress(Section::Isolation.as_str());
    let busy: Vec<ServerSpec> = layouts(servers)
        .map(|spec| spec.with_args(&["--simulate-work", ISOLATION_WORK]))
        .collect();
    let mut p50 = Vec::new();
    let samples = interleave(&busy, plan.runs, |index, running| {
        // The background runs a warm-up longer than the probe's and ends
        // after it, so that every probe sample meets saturated workers.
        // Only the probe scrapes: its figures are the sample's.
        let mut background = load(plan, running);
        background.server_metrics = None;
        background.duration = HumanDuration(background.duration.0 + background.warmup.0);
        let mut probe = load(plan, running);
        probe.churn = true;
        probe.connections = 1;
        let name = busy[index].name.clone();
        let saturate = std::thread::spawn(move || bench::run(&background, false));
        std::thread::sleep(Duration::from_secs_f64(plan.warmup_secs / 2.0));
        let sample = bench_sample(&name, &probe, |report| report.latency_us.p99 as f64);
        joined(name, "the isolation background load", saturate.join())?;
        if let Ok(sample) = &sample {
            p50.push((
                index,
                sample.report.as_ref().map_or(0, |r| r.latency_us.p50),
            ));
        }
        sample
    })?;
    let cell = |metric: &'static str, servers| Cell {
        section: Section::Isolation,
        label: format!(
            "{metric} connect to first echo, 50 connections keeping the workers busy \
             with {ISOLATION_WORK} of work per echo"
        ),
        metric,
        message_size: 64,
        connections: 1,
        pipeline: 1,
        fraction: None,
        servers,
        ratio: None,
    };
    let medians: Vec<Samples> = samples
        .iter()
        .enumerate()
        .map(|(index, samples)| {
            let values = p50
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, v)| Sample::value(*v as f64))
                .collect();
            Samples::of(&samples.server, values)
        })
        .collect();
    Ok(vec![cell("p50 µs", medians), cell("p99 µs", samples)])
}

/// Resident memory per idle connection.
fn memory(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    Ok(vec![memory_cell(
        plan,
        Section::Memory,
        servers,
        plan.idle_connections,
    )?])
}

/// The resident memory per idle connection of each of `servers`, holding
/// `count` connections open, as a cell of `section`.
fn memory_cell(
    plan: &Plan,
    section: Section,
    servers: &[ServerSpec],
    count: usize,
) -> Result<Cell, SuiteError> {
    progress(&format!("{section}: memory, {count} idle connections"));
    let samples = interleave(servers, plan.runs, |index, running| {
        let before = running.rss_bytes().unwrap_or(0);
        let held = hold_idle(running.addr, count).map_err(|why| SuiteError::Server {
            name: servers[index].name.clone(),
            why,
        })?;
        std::thread::sleep(Duration::from_secs(1));
        let after = running.rss_bytes().unwrap_or(0);
        drop(held);
        Ok(Sample::value(
            after.saturating_sub(before) as f64 / count as f64,
        ))
    })?;
    Ok(Cell {
        section,
        label: format!("RSS growth per idle connection, {count} connections"),
        metric: BYTES_PER_CONN,
        message_size: 16,
        connections: count,
        pipeline: 1,
        fraction: None,
        servers: samples,
        ratio: None,
    })
}

/// What observability costs: `split` with the admin endpoint off, and on
/// with its `/metrics` scraped every [`SCRAPE_INTERVAL`] as a Prometheus
/// server would, over the same closed-loop loads. The load generator does
/// not scrape here, so that the scraper is the only difference.
fn admin(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    let split = split(servers, "admin")?;
    let pair = [
        split.with_admin("split (admin off)", false),
        split.with_admin("split (admin on)", true),
    ];
    let mut cells = Vec::new();
    for (size, connections) in ADMIN_LOADS {
        let label = format!("{size} B x {connections} conns, pipeline 1");
        progress(&format!("admin endpoint off and on: {label}"));
        let samples = interleave(&pair, plan.runs, |index, running| {
            let name = &pair[index].name;
            let mut options = load(plan, running);
            options.server_metrics = None;
            options.message_size = size;
            options.connections = connections;
            let scraper = match running.metrics_url() {
                Some(url) => Some(Scraper::start(url, SCRAPE_INTERVAL)?),
                None => None,
            };
            let sample = bench_sample(name, &options, |report| report.msgs_per_sec);
            let scrapes = match scraper {
                Some(scraper) => Some(scraper.stop(name)?),
                None => None,
            };
            Ok(Sample { scrapes, ..sample? })
        })?;
        let ratio = Ratio::of("on / off", &samples, 1, 0);
        cells.push(Cell {
            ratio,
            ..Cell::closed_loop(Section::Admin, label, (size, connections, 1), samples)
        });
    }
    Ok(cells)
}

/// What the load generator speaks to a server of a transport comparison.
#[derive(Debug, Clone, Copy)]
enum Over<'a> {
    Tcp,
    /// TLS, trusting the certificate of this file.
    Tls(&'a Path),
    Udp,
}

impl Over<'_> {
    fn apply(self, options: &mut BenchOptions) {
        match self {
            Over::Tcp => {}
            Over::Tls(ca) => {
                options.tls = true;
                options.tls_ca = Some(ca.to_owned());
            }
            Over::Udp => options.udp = true,
        }
    }
}

/// tandem's own layouts among `servers`: not the article's thread counts
/// (`split-2+8`), nor the epoll reference.
fn layouts(servers: &[ServerSpec]) -> impl Iterator<Item = &ServerSpec> {
    servers
        .iter()
        .filter(|spec| spec.is_tandem && !spec.name.contains('+'))
}

/// The `split` server, which `section` needs.
pub(super) fn split<'a>(
    servers: &'a [ServerSpec],
    section: &str,
) -> Result<&'a ServerSpec, SuiteError> {
    servers
        .iter()
        .find(|spec| spec.name == "split")
        .ok_or_else(|| SuiteError::Setup(format!("the {section} section needs the split server")))
}

/// The servers of a transport comparison: each layout with the transport's
/// `args`, renamed `<layout> (<tag>)`, spoken to `over` it; then `split` as
/// it is, renamed `split (<baseline>)`, spoken to over plain TCP.
struct Lineup<'a> {
    specs: Vec<ServerSpec>,
    overs: Vec<Over<'a>>,
    /// `split (<tag>)`'s index: the dividend of the ratio, the baseline
    /// (last) its divisor.
    split: usize,
    /// The ratio's name, `<tag> / <baseline>`.
    ratio_of: &'static str,
}

impl<'a> Lineup<'a> {
    fn new(
        servers: &[ServerSpec],
        args: &[&str],
        (tag, over): (&str, Over<'a>),
        baseline: &str,
        ratio_of: &'static str,
    ) -> Result<Lineup<'a>, SuiteError> {
        let mut specs: Vec<ServerSpec> = layouts(servers)
            .map(|spec| {
                spec.with_args(args)
                    .named(&format!("{} ({tag})", spec.name))
            })
            .collect();
        let mut overs = vec![over; specs.len()];
        let baseline = split(servers, tag)?.named(&format!("split ({baseline})"));
        // Found, as `split` is one of the layouts.
        let split_index = layouts(servers)
            .position(|spec| spec.name == "split")
            .unwrap_or(0);
        specs.push(baseline);
        overs.push(Over::Tcp);
        Ok(Lineup {
            specs,
            overs,
            split: split_index,
            ratio_of,
        })
    }

    /// The section's ratio in `samples`, one per server of the lineup.
    fn ratio(&self, samples: &[Samples]) -> Option<Ratio> {
        Ratio::of(self.ratio_of, samples, self.split, self.specs.len() - 1)
    }
}

/// Closed-loop cells of a transport comparison: each load on every server
/// of `lineup`, with the lineup's ratio.
fn transport_cells(
    plan: &Plan,
    section: Section,
    lineup: &Lineup,
) -> Result<Vec<Cell>, SuiteError> {
    let mut cells = Vec::new();
    for &(size, connections) in &plan.transport_loads {
        let label = format!("{size} B x {connections} clients, pipeline 1");
        progress(&format!("{section}: {label}"));
        let mut cell = closed_cell(
            plan,
            section,
            label,
            &lineup.specs,
            (size, connections, 1),
            |index, options| lineup.overs[index].apply(options),
        )?;
        cell.ratio = lineup.ratio(&cell.servers);
        cells.push(cell);
    }
    Ok(cells)
}

/// TLS: every layout serving over TLS (a fresh self-signed certificate),
/// beside `split` over plain TCP; the closed loop, and churn, where every
/// connection makes a handshake.
fn tls(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    let certificate = Certificate::new()?;
    let (cert, key) = (certificate.cert_arg()?, certificate.key_arg()?);
    let args = ["--tls-cert", cert, "--tls-key", key];
    let over = Over::Tls(&certificate.cert);
    let lineup = Lineup::new(servers, &args, ("TLS", over), "plain", "TLS / plain")?;
    let mut cells = transport_cells(plan, Section::Tls, &lineup)?;
    let mut churn = churn_cell(plan, Section::Tls, &lineup.specs, |index, options| {
        lineup.overs[index].apply(options);
    })?;
    churn.ratio = lineup.ratio(&churn.servers);
    cells.push(churn);
    Ok(cells)
}

/// UDP: every layout echoing datagrams (`--udp`, its per-source limit
/// raised out of the way, as every datagram comes from 127.0.0.1), beside
/// `split` over TCP.
fn udp(plan: &Plan, servers: &[ServerSpec]) -> Result<Vec<Cell>, SuiteError> {
    let args = ["--udp", "--udp-rate-limit", UDP_RATE_LIMIT];
    let lineup = Lineup::new(servers, &args, ("UDP", Over::Udp), "TCP", "UDP / TCP")?;
    transport_cells(plan, Section::Udp, &lineup)
}

/// The servers of the peers section: tandem's layouts with their admin
/// endpoint off (the peers have none, and it has a cost: see the admin
/// section), the epoll reference, and the peers that can run here.
pub struct PeerLineup<'a> {
    specs: Vec<ServerSpec>,
    layouts: Vec<String>,
    peers: Vec<String>,
    skipped: &'a [Skipped],
    counter: &'a Counter,
}

impl<'a> PeerLineup<'a> {
    pub fn new(servers: &[ServerSpec], peers: &'a Peers, counter: &'a Counter) -> PeerLineup<'a> {
        let mut specs: Vec<ServerSpec> = layouts(servers)
            .map(|spec| spec.with_admin(&spec.name, false))
            .collect();
        let layouts = specs.iter().map(|spec| spec.name.clone()).collect();
        specs.extend(servers.iter().filter(|spec| !spec.is_tandem).cloned());
        specs.extend(peers.servers.iter().cloned());
        let peer_names = specs
            .iter()
            .filter(|spec| !spec.is_tandem)
            .map(|spec| spec.name.clone())
            .collect();
        PeerLineup {
            specs,
            layouts,
            peers: peer_names,
            skipped: &peers.skipped,
            counter,
        }
    }

    /// Where each layout stands against the peers in `cells`.
    pub fn compare(&self, cells: &[Cell]) -> Comparison {
        targets::compare(
            cells,
            &self.layouts,
            &self.peers,
            self.skipped.to_vec(),
            self.counter.clone(),
        )
    }
}

/// tandem beside the peers: the closed loop at each of the plan's peer
/// loads, idle memory, then syscalls and CPU per message.
fn peers_section(plan: &Plan, lineup: &PeerLineup) -> Result<Vec<Cell>, SuiteError> {
    let servers = &lineup.specs;
    let mut cells = Vec::new();
    for &(size, connections) in &plan.peer_loads {
        let label = format!("{size} B x {connections} conns, pipeline 1");
        progress(&format!("peers: {label}"));
        cells.push(closed_cell(
            plan,
            Section::Peers,
            label,
            servers,
            (size, connections, 1),
            |_, _| {},
        )?);
    }
    cells.push(memory_cell(
        plan,
        Section::Peers,
        servers,
        plan.peer_idle_connections,
    )?);
    cells.extend(costs(plan, servers, lineup.counter)?);
    Ok(cells)
}

/// Syscalls and CPU per message at [`COST_LOAD`], counted over the load
/// generator's whole run: one cell of CPU time, whose samples carry the
/// raw counts, then one per syscall figure where syscalls were counted.
///
/// The load runs with no warm-up, so that the counted run and the
/// generator's window are the same but for the connects before it and the
/// closes after it (50 accepts and 50 reads of EOF, against tens of
/// thousands of messages), and for the few messages still in flight when
/// the window shuts.
fn costs(plan: &Plan, servers: &[ServerSpec], counter: &Counter) -> Result<Vec<Cell>, SuiteError> {
    let (size, connections) = COST_LOAD;
    let label = format!("{size} B x {connections} conns, no warm-up");
    progress(&format!("peers: syscalls and CPU per message, {label}"));
    let samples = interleave(servers, plan.runs, |index, running| {
        let name = &servers[index].name;
        let failed = |why: String| SuiteError::Cost {
            server: name.clone(),
            why,
        };
        let mut options = load(plan, running);
        options.message_size = size;
        options.connections = connections;
        options.warmup = HumanDuration(Duration::ZERO);
        let counting = counter.start(running.pid()).map_err(failed)?;
        let sample = bench_sample(name, &options, |report| report.msgs_per_sec)?;
        let messages = sample.report.as_ref().map_or(0, |report| report.messages);
        let cost = counting.finish(messages).map_err(failed)?;
        let cpu = cost
            .cpu_us_per_msg()
            .ok_or_else(|| failed("no message was echoed".to_owned()))?;
        Ok(Sample {
            value: cpu,
            cost: Some(cost),
            ..sample
        })
    })?;
    let cell = |metric: &'static str, servers: Vec<Samples>| Cell {
        section: Section::Peers,
        label: label.clone(),
        metric,
        message_size: size,
        connections,
        pipeline: 1,
        fraction: None,
        servers,
        ratio: None,
    };
    let mut cells = Vec::new();
    for (metric, events) in cost::FIGURES {
        // A server whose samples lack the figure is left out of its cell:
        // an absent count is not a zero.
        let figures: Vec<Samples> = samples
            .iter()
            .filter_map(|taken| {
                let values = taken
                    .samples
                    .iter()
                    .map(|sample| sample.cost.as_ref()?.syscalls_per_msg(events))
                    .collect::<Option<Vec<f64>>>()?;
                Some(Samples::of(
                    &taken.server,
                    values.into_iter().map(Sample::value).collect(),
                ))
            })
            .collect();
        if !figures.is_empty() {
            cells.push(cell(metric, figures));
        }
    }
    cells.insert(0, cell(cost::CPU_METRIC, samples));
    Ok(cells)
}

/// Opens `count` connections, echoes 16 bytes on each (so each is accepted
/// and served), and returns them open.
fn hold_idle(
    target: std::net::SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpStream>, String> {
    use std::io::{Read, Write};
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream =
            std::net::TcpStream::connect(target).map_err(|err| format!("connect: {err}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|err| err.to_string())?;
        let mut echo = [0u8; 16];
        stream
            .write_all(b"idle connection!")
            .map_err(|err| format!("write: {err}"))?;
        stream
            .read_exact(&mut echo)
            .map_err(|err| format!("read: {err}"))?;
        held.push(stream);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_panicked_is_a_panic_not_a_bad_option() {
        let panicked = std::thread::spawn(|| -> Result<Report, BenchError> { panic!("boom") });
        let err = joined("split".to_owned(), "the background load", panicked.join()).unwrap_err();
        assert!(
            matches!(&err, SuiteError::Panicked { .. }),
            "a panic must not exit as bad flags do: {err:?}"
        );
        assert_eq!(err.to_string(), "the background load panicked");
    }

    #[test]
    fn a_section_without_the_split_server_is_a_set_up_failure_not_a_bad_option() {
        let err = split(&[], "admin").unwrap_err();
        assert!(matches!(&err, SuiteError::Setup(_)), "{err:?}");
        assert_eq!(err.to_string(), "the admin section needs the split server");
    }
}
