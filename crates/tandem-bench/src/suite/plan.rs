//! What a suite is asked to do: the options of `tandem suite`, the
//! sections it can measure, and the plan of loads it runs. A leaf: it
//! imports nothing of the suite but the CPU list `--client-cpus` takes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::cpus::CpuList;
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
    pub(super) fn measures_the_reference(self) -> bool {
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
    pub(super) fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    pub(super) fn new(options: &SuiteOptions) -> Plan {
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
