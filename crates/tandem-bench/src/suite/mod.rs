//! `tandem suite`: the comparison the article never made.
//!
//! Starts each server (tandem's layouts, the epoll reference and, for the
//! `peers` section, echo servers on other runtimes), runs a matrix of loads
//! against it with the load generator, and writes
//! `results.json`, a markdown report and plots to `<out>/<name>/`
//! (`target/suite/` unless `--out` says otherwise).
//!
//! - `servers`: what is compared, and starting and stopping it;
//! - `peers`: the servers of `bench/peers/` (the article's single runtime,
//!   actix-server, monoio), built with cargo before the suite measures,
//!   and skipped with a reason where they cannot run;
//! - `cells`: the figures every section makes and the report reads: a
//!   cell, one load sampled on each server;
//! - `measure`: each kind of measurement (closed and open loop, churn,
//!   isolation, memory, the cost of the admin endpoint, TLS and UDP beside
//!   plain TCP, tandem beside the peers) as cells of samples;
//! - `offload`: light clients beside heavy ones on a server whose work
//!   per chunk runs inline, through `spawn_blocking` or on a compute
//!   runtime: the two groups' figures apart, and the server's CPU;
//! - `cpus`: `--client-cpus`, the load generator on CPUs of its own and
//!   the servers on the rest;
//! - `cost`: syscalls and CPU time a server spends per message, counted
//!   with `perf stat` where it works, else CPU time from /proc;
//! - `targets`: where each layout stands against the peers: the ratios the
//!   peers section is judged by;
//! - `scraper`: a Prometheus-like scraper, for the admin section;
//! - `certificate`: the TLS section's throwaway certificate;
//! - `folder`: where a run's results go, claimed before it measures;
//! - `report`: the markdown tables; `plots`: the SVG and PNG charts.
//!
//! Fairness: within a cell the servers are interleaved (A B C A B C ...),
//! every sample starts a fresh server, and each figure is the median of
//! `--runs` samples with their min and max. The machine's cores and load are
//! recorded beside the results.
//!
//! tandem servers run with their admin endpoint, and every load generator
//! sample against one scrapes its metrics around the run
//! (`--server-metrics`): each such sample's report carries the server's own
//! figures (busy ratios, hand-off waits).

mod cells;
mod certificate;
mod cost;
mod cpus;
mod folder;
mod measure;
mod offload;
mod peers;
mod plots;
mod report;
mod scraper;
mod servers;
mod targets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nix::sched::CpuSet;
use serde::Serialize;
use thiserror::Error;

pub use self::cells::{Cell, Ratio, Sample, Samples};
pub use self::cost::{Cost, Counter};
pub use self::cpus::{CpuList, CpuSplit, Pinned};
pub use self::offload::{CpuSpent, Figures, Group, MixedSample, Offload, Spread, Variant};
pub use self::peers::Skipped;
use self::servers::ServerSpec;
pub use self::targets::{Comparison, LayoutTargets, VsPeer};
use tandem::duration::HumanDuration;

/// The options of `tandem suite`.
#[derive(Debug, Clone, Args)]
pub struct SuiteOptions {
    /// A small matrix that finishes in a few minutes.
    #[arg(long)]
    pub quick: bool,
    /// Name of the results folder, which must not exist yet [default:
    /// quick or full, with the date and time].
    #[arg(long)]
    pub name: Option<String>,
    /// Where result folders go [default: target/suite, or suite under
    /// $CARGO_TARGET_DIR; both ignored by git].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The epoll reference server [default: examples/epoll_echo next to this binary].
    #[arg(long, value_name = "PATH")]
    pub reference: Option<PathBuf>,
    /// The peer servers' cargo workspace, which the peers section builds
    /// [default: bench/peers of the source tree this tandem was built from].
    #[arg(long, value_name = "DIR")]
    pub peers: Option<PathBuf>,
    /// Samples per server and cell (at least 3 for a median with a range).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: usize,
    /// Measured window of each sample [default: 1s quick, 5s full].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<HumanDuration>,
    /// Run only these measurements (the open loop also runs the closed-loop
    /// cell it takes each server's maximum from).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTION")]
    pub only: Vec<Section>,
    /// Run the load generator on these CPUs (`0`, `0-1,4`) and every server
    /// on the others, each with a thread per CPU it gets [default: all
    /// share every CPU, each server with a thread per core]
    #[arg(long, value_name = "LIST")]
    pub client_cpus: Option<CpuList>,
}

/// The measurements of a suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Closed,
    Open,
    Churn,
    Isolation,
    Memory,
    /// The cost of the admin endpoint: `split` with it off and on.
    Admin,
    /// The layouts over TLS, beside `split` over plain TCP.
    Tls,
    /// The layouts echoing UDP, beside `split` over TCP.
    Udp,
    /// The layouts beside echo servers on other runtimes (`bench/peers/`
    /// and the epoll reference): throughput, idle memory, and syscalls and
    /// CPU per message.
    Peers,
    /// Light clients beside heavy ones at `--simulate-work 200us/KiB`,
    /// the work inline, through `spawn_blocking`, or on a compute runtime
    /// of 1 or 2 threads.
    Offload,
}

impl Section {
    /// The section's name, as `--only` takes it: the one spelling of it
    /// in `results.json`, the report and the charts' file names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Section::Closed => "closed",
            Section::Open => "open",
            Section::Churn => "churn",
            Section::Isolation => "isolation",
            Section::Memory => "memory",
            Section::Admin => "admin",
            Section::Tls => "tls",
            Section::Udp => "udp",
            Section::Peers => "peers",
            Section::Offload => "offload",
        }
    }

    /// Whether the section measures the epoll reference beside the
    /// layouts; the others start tandem servers only.
    fn measures_the_reference(self) -> bool {
        match self {
            Section::Closed | Section::Open | Section::Churn | Section::Memory | Section::Peers => {
                true
            }
            Section::Isolation
            | Section::Admin
            | Section::Tls
            | Section::Udp
            | Section::Offload => false,
        }
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Section {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Why a suite could not run.
#[derive(Debug, Error)]
pub enum SuiteError {
    /// A server would not start.
    #[error("cannot start server {name}: {why}")]
    Server { name: String, why: String },
    /// The load generator failed outright.
    #[error("load generator failed against {server}: {cause}")]
    Bench {
        server: String,
        cause: crate::bench::BenchError,
    },
    /// A server's metrics could not be scraped.
    #[error("{server}: {cause}")]
    Scrape {
        server: String,
        cause: crate::bench::server_metrics::ScrapeError,
    },
    /// The peer servers could not be built.
    #[error("cannot build the peer servers of {dir}: {why}")]
    Peers { dir: PathBuf, why: String },
    /// What a server spends per message could not be counted.
    #[error("cannot count what {server} spends per message: {why}")]
    Cost { server: String, why: String },
    /// Results could not be written.
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// An option is out of range, or a needed file is missing: refused
    /// before anything ran, as bad flags are.
    #[error("{0}")]
    Invalid(String),
    /// The suite could not set itself up on this machine: its own binary,
    /// the CPU split, a certificate, a scraper.
    #[error("{0}")]
    Setup(String),
    /// A thread of the suite panicked.
    #[error("{thread} panicked")]
    Panicked { thread: String },
}

/// The peers section's closed-loop loads: (message size, clients). Small
/// messages over few and many connections, where a runtime's overhead per
/// message shows; 4 KiB, one read buffer's worth; 16 KiB, where copying
/// and read sizes dominate.
const PEER_LOADS: [(usize, usize); 4] = [(64, 50), (64, 1000), (4096, 50), (16 * 1024, 50)];

/// The loads of one suite.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub message_sizes: Vec<usize>,
    pub connections: Vec<usize>,
    pub pipelines: Vec<usize>,
    /// Open-loop rates, as fractions of each server's closed-loop maximum.
    pub open_fractions: Vec<f64>,
    /// The transport sections' closed-loop loads: (message size, clients).
    pub transport_loads: Vec<(usize, usize)>,
    pub idle_connections: usize,
    /// The peers section's closed-loop loads: (message size, clients).
    pub peer_loads: Vec<(usize, usize)>,
    /// Idle connections the peers section holds open on each server.
    pub peer_idle_connections: usize,
    /// The measurements to run; all when empty.
    pub only: Vec<Section>,
    pub runs: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
}

impl Plan {
    /// True if `section` is to run.
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    fn new(options: &SuiteOptions) -> Plan {
        let duration = options.duration.map(|d| d.0);
        if options.quick {
            Plan {
                message_sizes: vec![64, 16 * 1024],
                connections: vec![1, 50, 1000],
                pipelines: vec![1],
                open_fractions: vec![0.5, 0.9],
                transport_loads: vec![(64, 50)],
                idle_connections: 5000,
                // Every load the peers are compared at, each in a short
                // window; fewer idle connections.
                peer_loads: PEER_LOADS.to_vec(),
                peer_idle_connections: 2000,
                only: options.only.clone(),
                runs: options.runs,
                duration_secs: duration.unwrap_or(Duration::from_secs(1)).as_secs_f64(),
                warmup_secs: 0.5,
            }
        } else {
            Plan {
                message_sizes: vec![64, 1024, 16 * 1024],
                connections: vec![1, 50, 500, 1000, 5000],
                pipelines: vec![1, 16],
                open_fractions: vec![0.25, 0.5, 0.75, 0.9],
                transport_loads: vec![(64, 50), (1024, 50), (16 * 1024, 50)],
                idle_connections: 5000,
                peer_loads: PEER_LOADS.to_vec(),
                peer_idle_connections: 5000,
                only: options.only.clone(),
                runs: options.runs,
                duration_secs: duration.unwrap_or(Duration::from_secs(5)).as_secs_f64(),
                warmup_secs: 1.0,
            }
        }
    }
}

/// The machine the suite ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub loadavg_before: String,
    pub loadavg_after: String,
    /// The load generator's CPUs and the servers', with `--client-cpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_split: Option<CpuSplit>,
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Everything a suite measured: `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub name: String,
    pub machine: Machine,
    pub plan: Plan,
    pub servers: Vec<String>,
    pub cells: Vec<Cell>,
    /// The peers section: who was compared, who was skipped and why, how
    /// costs were counted, and where each layout stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Comparison>,
    /// The offload section: each variant's light and heavy figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offload: Option<Offload>,
}

/// Runs the suite and writes its results; returns the results folder.
pub fn run(options: &SuiteOptions) -> Result<PathBuf, SuiteError> {
    let mut suite = Suite::new(options)?;
    let dir = suite.claim_folder()?;
    let measured = match suite.measure() {
        Ok(measured) => measured,
        Err(err) => {
            // Nothing was written into the claimed folder: leave no empty
            // folder behind (remove_dir removes only an empty one).
            let _ = std::fs::remove_dir(&dir);
            return Err(err);
        }
    };
    let results = suite.results(&dir, measured);
    write_results(&dir, &results)?;
    Ok(dir)
}

/// A suite set up to run: its plan, the servers it compares, and where
/// the load generator and the servers run.
struct Suite<'a> {
    options: &'a SuiteOptions,
    plan: Plan,
    /// tandem's servers, then the epoll reference if it is measured.
    servers: Vec<ServerSpec>,
    cores: usize,
    /// With `--client-cpus`: the split, and the servers' side of it.
    split: Option<CpuSplit>,
    server_cpus: Option<CpuSet>,
    /// A thread per CPU a server may run on.
    server_threads: usize,
    cargo_target_dir: Option<PathBuf>,
}

/// What the measuring gave, before it is written.
struct Measured {
    loadavg_before: String,
    cells: Vec<Cell>,
    comparison: Option<Comparison>,
    offload: Option<Offload>,
}

impl<'a> Suite<'a> {
    /// Checks `options` and sets the suite up; nothing is measured or
    /// written yet.
    fn new(options: &'a SuiteOptions) -> Result<Suite<'a>, SuiteError> {
        if options.runs == 0 {
            return Err(SuiteError::Invalid("--runs must be at least 1".to_owned()));
        }
        let tandem = std::env::current_exe()
            .map_err(|err| SuiteError::Setup(format!("cannot find the tandem binary: {err}")))?;
        let plan = Plan::new(options);
        let reference = reference(options, &tandem, &plan)?;
        // Thousands of client sockets live in this process.
        let _ = rlimit::increase_nofile_limit(u64::MAX);

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let split = options.client_cpus.clone().map(CpuSplit::new).transpose()?;
        let server_threads = split
            .as_ref()
            .map_or(cores, |split| split.servers.cpus().len());
        let server_cpus = split.as_ref().map(CpuSplit::server_set).transpose()?;
        Ok(Suite {
            options,
            plan,
            servers: compared(&tandem, reference, server_threads, server_cpus),
            cores,
            split,
            server_cpus,
            server_threads,
            cargo_target_dir: std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
        })
    }

    /// Creates the results folder, before anything is measured.
    fn claim_folder(&self) -> Result<PathBuf, SuiteError> {
        let options = self.options;
        let out = options
            .out
            .clone()
            .unwrap_or_else(|| folder::default_out(self.cargo_target_dir.as_deref()));
        match &options.name {
            Some(name) => folder::claim(&out, name, true),
            None => folder::claim(
                &out,
                &folder::default_name(options.quick, std::time::SystemTime::now()),
                false,
            ),
        }
    }

    /// Builds the peers if their section runs, pins the load generator
    /// with `--client-cpus`, and measures every section of the plan.
    fn measure(&mut self) -> Result<Measured, SuiteError> {
        let mut peers = self.build_peers()?;
        // Pinned after cargo has built the peers, which may use every CPU,
        // until the measuring is over.
        let _pinned = self.pin(&mut peers)?;
        let loadavg_before = first_line("/proc/loadavg");
        let lineup = peers
            .as_ref()
            .map(|(peers, counter)| measure::PeerLineup::new(&self.servers, peers, counter));
        let cells = measure::all(&self.plan, &self.servers, lineup.as_ref())?;
        let comparison = lineup.map(|lineup| lineup.compare(&cells));
        let offload = if self.plan.runs(Section::Offload) {
            Some(offload::measure(&self.plan, &self.servers)?)
        } else {
            None
        };
        Ok(Measured {
            loadavg_before,
            cells,
            comparison,
            offload,
        })
    }

    /// The peers and how their costs are counted, if their section runs.
    fn build_peers(&self) -> Result<Option<(peers::Peers, Counter)>, SuiteError> {
        if !self.plan.runs(Section::Peers) {
            return Ok(None);
        }
        let workspace = self
            .options
            .peers
            .clone()
            .unwrap_or_else(|| PathBuf::from(peers::DEFAULT_DIR));
        let target_dir = peers::default_target_dir(self.cargo_target_dir.as_deref());
        eprintln!(
            "suite: building the peers of {} into {}",
            workspace.display(),
            target_dir.display()
        );
        let peers = peers::build(&workspace, &target_dir, self.server_threads)?;
        for skipped in &peers.skipped {
            eprintln!("suite: skipping {}: {}", skipped.server, skipped.reason);
        }
        Ok(Some((peers, Counter::probe())))
    }

    /// With `--client-cpus`: puts the peers on the servers' CPUs, pins
    /// the load generator to its own until the guard goes, and records
    /// where each side runs.
    fn pin(
        &mut self,
        peers: &mut Option<(peers::Peers, Counter)>,
    ) -> Result<Option<Pinned>, SuiteError> {
        let (Some(split), Some(cpus)) = (&mut self.split, self.server_cpus) else {
            return Ok(None);
        };
        if let Some((peers, _)) = peers {
            peers.servers = std::mem::take(&mut peers.servers)
                .into_iter()
                .map(|spec| spec.on_cpus(cpus))
                .collect();
        }
        let pinned = split.pin_generator()?;
        // Recorded as the kernel sees it, from a server started once.
        if let Some(first) = self.servers.first() {
            let server = first.start()?;
            split.seen = Some(cpus::Seen {
                generator: cpus::seen("thread-self"),
                server: cpus::seen(&server.pid().to_string()),
            });
            server.stop();
        }
        Ok(Some(pinned))
    }

    /// The results of the run in `dir`.
    fn results(self, dir: &Path, measured: Measured) -> Results {
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Results {
            name,
            machine: Machine {
                cores: self.cores,
                cpu: cpu_model(),
                kernel: first_line("/proc/sys/kernel/osrelease"),
                loadavg_before: measured.loadavg_before,
                loadavg_after: first_line("/proc/loadavg"),
                cpu_split: self.split,
            },
            plan: self.plan,
            servers: self
                .servers
                .iter()
                .map(|server| server.name.clone())
                .collect(),
            cells: measured.cells,
            peers: measured.comparison,
            offload: measured.offload,
        }
    }
}

/// The epoll reference: `--reference`, else `examples/epoll_echo` next to
/// `tandem`; `None` if it is not there and no section of `plan` needs it.
fn reference(
    options: &SuiteOptions,
    tandem: &Path,
    plan: &Plan,
) -> Result<Option<PathBuf>, SuiteError> {
    let reference = match &options.reference {
        Some(path) => path.clone(),
        None => tandem
            .parent()
            .map(|dir| dir.join("examples").join("epoll_echo"))
            .unwrap_or_default(),
    };
    let needs_reference = <Section as clap::ValueEnum>::value_variants()
        .iter()
        .any(|&section| plan.runs(section) && section.measures_the_reference());
    match (reference.is_file(), needs_reference) {
        (true, _) => Ok(Some(reference)),
        (false, false) => Ok(None),
        (false, true) => Err(SuiteError::Invalid(format!(
            "no epoll reference server at {}: build it with \
             `cargo build --release --examples`, or pass --reference",
            reference.display()
        ))),
    }
}

/// The servers compared: tandem's layouts run from `tandem`, then the
/// epoll reference with a thread per CPU a server may run on, each pinned
/// to `cpus` if given.
fn compared(
    tandem: &Path,
    reference: Option<PathBuf>,
    threads: usize,
    cpus: Option<CpuSet>,
) -> Vec<ServerSpec> {
    let mut servers = vec![
        ServerSpec::tandem("single", tandem, &["--layout", "single"]),
        ServerSpec::tandem("split", tandem, &["--layout", "split"]),
        ServerSpec::tandem("sharded", tandem, &["--layout", "sharded"]),
        // The article's thread counts.
        ServerSpec::tandem(
            "split-2+8",
            tandem,
            &[
                "--layout",
                "split",
                "--acceptor-threads",
                "2",
                "--workers",
                "8",
            ],
        ),
    ];
    // Last: the reports' columns follow this order.
    servers.extend(reference.map(|reference| ServerSpec::reference(reference, threads)));
    match cpus {
        Some(cpus) => servers.into_iter().map(|spec| spec.on_cpus(cpus)).collect(),
        None => servers,
    }
}

fn write_results(dir: &Path, results: &Results) -> Result<(), SuiteError> {
    let write_error = |path: PathBuf| move |cause| SuiteError::Write { path, cause };
    std::fs::create_dir_all(dir).map_err(write_error(dir.to_owned()))?;
    let json = serde_json::to_string_pretty(results)
        .map_err(|err| write_error(dir.join("results.json"))(std::io::Error::other(err)))?;
    std::fs::write(dir.join("results.json"), json)
        .map_err(write_error(dir.join("results.json")))?;
    let charts = plots::draw(dir, results).map_err(write_error(dir.to_owned()))?;
    let markdown = report::markdown(results, &charts);
    std::fs::write(dir.join("report.md"), markdown).map_err(write_error(dir.join("report.md")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteOptions,
    }

    #[test]
    fn only_peers_selects_the_peers_section_alone() {
        let cli = Cli::try_parse_from(["suite", "--only", "peers", "--quick"]).unwrap();
        let plan = Plan::new(&cli.suite);
        assert_eq!(cli.suite.only, [Section::Peers]);
        assert!(plan.runs(Section::Peers));
        assert!(!plan.runs(Section::Closed));
    }

    #[test]
    fn only_offload_selects_the_offload_section_alone() {
        let cli = Cli::try_parse_from(["suite", "--only", "offload"]).unwrap();
        let plan = Plan::new(&cli.suite);
        assert!(plan.runs(Section::Offload));
        assert!(!plan.runs(Section::Isolation));
        assert!(!plan.runs(Section::Peers));
    }

    #[test]
    fn quick_peers_keep_every_load_with_fewer_idle_connections() {
        let quick = Cli::try_parse_from(["suite", "--quick"]).unwrap();
        let full = Cli::try_parse_from(["suite"]).unwrap();
        let (quick, full) = (Plan::new(&quick.suite), Plan::new(&full.suite));
        assert_eq!(quick.peer_loads, full.peer_loads);
        assert!(quick.peer_idle_connections < full.peer_idle_connections);
        assert!(quick.duration_secs < full.duration_secs);
    }

    #[test]
    fn each_section_has_one_name_for_only_the_json_and_the_report() {
        for &section in <Section as clap::ValueEnum>::value_variants() {
            let cli = Cli::try_parse_from(["suite", "--only", section.as_str()]).unwrap();
            assert_eq!(cli.suite.only, [section]);
            assert_eq!(
                serde_json::to_value(section).unwrap(),
                section.as_str(),
                "{section:?}"
            );
            assert_eq!(section.to_string(), section.as_str());
        }
        assert_eq!(Section::Tls.as_str(), "tls");
    }

    #[test]
    fn zero_runs_are_a_bad_option() {
        let cli = Cli::try_parse_from(["suite", "--runs", "0"]).unwrap();
        let err = Suite::new(&cli.suite).err().unwrap();
        assert!(matches!(&err, SuiteError::Invalid(_)), "{err:?}");
        assert_eq!(err.to_string(), "--runs must be at least 1");
    }

    #[test]
    fn the_peers_workspace_is_an_option_with_the_source_trees_as_default() {
        let cli = Cli::try_parse_from(["suite", "--peers", "/src/bench/peers"]).unwrap();
        assert_eq!(cli.suite.peers, Some(PathBuf::from("/src/bench/peers")));
        let cli = Cli::try_parse_from(["suite"]).unwrap();
        assert_eq!(cli.suite.peers, None);
    }
}
