//! What a suite run writes to `results.json`, and the report and the
//! charts read: the machine, the plan, and every section's figures.

use serde::Serialize;

use super::cells::Cell;
use super::cpus::CpuSplit;
use super::offload::Offload;
use super::plan::Plan;
use super::targets::Comparison;

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
