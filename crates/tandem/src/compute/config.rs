//! [`ComputeConfig`]: how the compute runtime runs, and [`ComputeVia`],
//! which threads run its work. A leaf, as the server's configuration is.

use crate::range::{OutOfRange, in_range};
use crate::server::{MAX_QUEUE, MAX_THREADS};

label_set! {
    /// Which threads run the work: `runtime` or `spawn-blocking`.
    #[derive(Default)]
    pub enum ComputeVia {
        /// The worker threads of a dedicated multi-thread runtime.
        #[default]
        Runtime => "runtime",
        /// `spawn_blocking` on a blocking pool capped at the same number of
        /// threads.
        SpawnBlocking => "spawn-blocking",
    }
    parse as UnknownComputeVia "compute-via"
}

/// How the compute runtime runs: [`Default`], then a setter per field;
/// each field says its own default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComputeConfig {
    /// Threads that run the work; 0 runs it inline. Default: 0.
    pub threads: usize,
    /// Jobs admitted at once, queued or running; beyond it,
    /// [`Compute::run`](super::Compute::run) waits. Default: 128.
    pub queue: usize,
    /// Which threads run the work. Default: [`ComputeVia::Runtime`].
    pub via: ComputeVia,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            threads: 0,
            // Enough to keep a few threads busy behind many connections,
            // few enough that what waits is a connection, not memory.
            queue: 128,
            via: ComputeVia::Runtime,
        }
    }
}

setters!(ComputeConfig {
    threads: usize,
    queue: usize,
    via: ComputeVia,
});

impl ComputeConfig {
    /// Checks the counts against their ranges.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        in_range("compute_threads", self.threads, 0..=MAX_THREADS)?;
        in_range("compute_queue", self.queue, 1..=MAX_QUEUE)?;
        Ok(())
    }
}
