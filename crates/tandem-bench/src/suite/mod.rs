//! `tandem suite`: the comparison the article never made.
//!
//! Starts each server (tandem's layouts, the epoll reference and, for the
//! `peers` section, echo servers on other runtimes), runs a matrix of loads
//! against it with the load generator, and writes
//! `results.json`, a markdown report and plots to `<out>/<name>/`
//! (`target/suite/` unless `--out` says otherwise).
//!
//! - `plan`: the options, the sections and the loads a suite runs;
//! - `error`: why a suite could not run, a bad option apart from the rest;
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
//! - `results`: what `results.json` holds;
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
mod error;
mod folder;
mod measure;
mod offload;
mod peers;
mod plan;
mod plots;
mod report;
mod results;
mod scraper;
mod servers;
mod targets;

use std::path::{Path, PathBuf};

use nix::sched::CpuSet;

pub use self::cells::{Cell, Ratio, Sample, Samples};
pub use self::cost::{Cost, Counter};
pub use self::cpus::{CpuList, CpuSplit, Pinned};
pub use self::error::SuiteError;
pub use self::offload::{CpuSpent, Figures, Group, MixedSample, Offload, Spread, Variant};
pub use self::peers::Skipped;
pub use self::plan::{Plan, Section, SuiteOptions};
pub use self::results::{Machine, Results};
use self::servers::ServerSpec;
pub use self::targets::{Comparison, LayoutTargets, VsPeer};

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
