//! The server's metrics, rendered in the Prometheus text format.
//!
//! [`Metrics`] owns one registry per server (no process-global recorder, so
//! that several servers can live in one process) and every series the admin
//! endpoint exposes. The names are fixed and every series exists from
//! start-up, counters at 0, so that dashboards and alerts never see a series
//! appear late.
//!
//! Three kinds of sources feed it, each at the cost its frequency allows:
//! - per read and write, bytes go through `tally`: plain thread-local
//!   integers, flushed to shared totals in batches, never an atomic per read;
//! - per connection (accepted, closed, rejected, hand-off wait), a counter
//!   or histogram is updated at once;
//! - per second, `runtimes` samples every tokio runtime of the server, and
//!   the gauges that mirror server state (active connections, queue depth)
//!   are read when a scrape renders them.
//!
//! Every label set (why a connection closed, what an accept error or a
//! refused header or handshake was, what became of a datagram) is an enum
//! in `labels`, which the producers name and the registry indexes.
//!
//! The registry is the Prometheus exporter's, with the `admin` feature,
//! which serves it. Without it nothing could read the series, so they are
//! not kept: the producers update handles that do nothing, and neither the
//! exporter nor the per-runtime sampling is built.

mod labels;
#[cfg(feature = "admin")]
pub(crate) mod runtimes;
pub(crate) mod tally;

use std::fmt;
use std::sync::atomic::AtomicUsize;
#[cfg(feature = "admin")]
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
#[cfg(feature = "admin")]
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};
#[cfg(feature = "admin")]
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub use self::labels::{
    AcceptError, CloseReason, ComputeOutcome, ProxyHeaderError, TlsHandshakeError, UdpOutcome,
};
#[cfg(feature = "admin")]
use self::runtimes::RuntimeProbe;
use self::tally::Totals;

/// Bucket bounds of `tandem_handoff_wait_seconds`, from 10 µs (an idle
/// server) to 10 s (a hand-off queue thousands deep behind a stalled worker).
#[cfg(feature = "admin")]
const HANDOFF_WAIT_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of `tandem_compute_wait_seconds`: the hand-off's, for the
/// same range of waits, from none to a queue seconds deep.
#[cfg(feature = "admin")]
const COMPUTE_WAIT_BUCKETS: [f64; 19] = HANDOFF_WAIT_BUCKETS;

/// The help line of every series.
const HELP: &[(&str, &str)] = &[
    (
        "tandem_connections_accepted_total",
        "Connections accepted from the listen backlog.",
    ),
    (
        "tandem_connections_active",
        "Connections admitted and not yet closed, queued ones included.",
    ),
    (
        "tandem_connections_max",
        "Connections served at once at most: --max-connections, fitted to RLIMIT_NOFILE.",
    ),
    (
        "tandem_connections_closed_total",
        "Served connections closed, by reason.",
    ),
    (
        "tandem_connections_aborted_total",
        "Connections the server closed with a reset (SO_LINGER 0) because the peer had not taken all it was sent: closed by the idle rule, shed, or cut, with echo still queued.",
    ),
    (
        "tandem_connections_rejected_total",
        "Connections accepted and closed at once, never served (over --max-connections-per-ip, or the socket could not be set up).",
    ),
    ("tandem_bytes_received_total", "Bytes read from clients."),
    ("tandem_bytes_sent_total", "Bytes written to clients."),
    (
        "tandem_handoff_queue_depth",
        "Accepted connections waiting in the hand-off queues.",
    ),
    (
        "tandem_handoff_queue_capacity",
        "Capacity of the hand-off queues (0 in the single layout, which has none).",
    ),
    (
        "tandem_handoff_wait_seconds",
        "Time from accept to the start of serving.",
    ),
    (
        "tandem_compute_queue_depth",
        "Compute jobs admitted and not finished, queued or running.",
    ),
    (
        "tandem_compute_queue_capacity",
        "Compute jobs admitted at once at most: --compute-queue, 0 when work runs inline.",
    ),
    (
        "tandem_compute_wait_seconds",
        "Time a compute job waited for a slot in the queue.",
    ),
    (
        "tandem_compute_jobs_total",
        "Compute jobs finished, by outcome.",
    ),
    (
        "tandem_buffer_memory_bytes",
        "Bytes of data buffers, lent to connections or free in the threads' caches (the process's, shared by its servers).",
    ),
    (
        "tandem_buffer_memory_limit_bytes",
        "The budget of data buffers: --buffer-memory.",
    ),
    (
        "tandem_buffer_waits_total",
        "Reads that waited for room in the buffer budget.",
    ),
    ("tandem_accept_errors_total", "Accept errors, by kind."),
    (
        "tandem_udp_datagrams_total",
        "UDP datagrams received (--udp), by what became of them.",
    ),
    (
        "tandem_proxy_header_errors_total",
        "Connections closed for their PROXY protocol header (missing, malformed, or from an untrusted peer), by kind.",
    ),
    (
        "tandem_tls_handshake_errors_total",
        "Connections closed because their TLS handshake did not complete, by kind.",
    ),
    (
        "tandem_runtime_workers",
        "Worker threads of each tokio runtime.",
    ),
    (
        "tandem_runtime_busy_ratio",
        "Share of the last second each runtime's workers spent busy (0 to 1).",
    ),
    (
        "tandem_runtime_global_queue_depth",
        "Tasks waiting in each runtime's global queue.",
    ),
    ("tandem_runtime_alive_tasks", "Tasks alive in each runtime."),
    (
        "tandem_runtime_io_driver_ready_total",
        "Readiness events each runtime's I/O driver delivered (built with tokio_unstable only).",
    ),
];

/// Where the series are registered: the exporter's registry, or, with
/// nothing to serve them, none.
#[cfg(feature = "admin")]
type Registry = PrometheusRecorder;
#[cfg(not(feature = "admin"))]
type Registry = metrics::NoopRecorder;

/// A server's metrics. Cheap to clone; every clone is the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

// Without the exposition, the gauges that a scrape sets and the state they
// mirror are never read.
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
struct Inner {
    recorder: Registry,
    #[cfg(feature = "admin")]
    handle: PrometheusHandle,
    accepted: Counter,
    rejected: Counter,
    aborted: Counter,
    /// One counter per variant of each label set, in its `ALL` order.
    closed: Vec<Counter>,
    accept_errors: Vec<Counter>,
    // Registered in every build, so that the exposition has the same
    // series whatever the features; counted only by a build that reads
    // headers or speaks TLS.
    #[cfg_attr(not(feature = "proxy-protocol"), allow(dead_code))]
    proxy_header_errors: Vec<Counter>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls_handshake_errors: Vec<Counter>,
    udp_datagrams: Vec<Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
    totals: Arc<Totals>,
    active: Gauge,
    max: Gauge,
    queue_depth: Gauge,
    queue_capacity: Gauge,
    handoff_wait: Histogram,
    compute_depth: Gauge,
    compute_capacity: Gauge,
    compute_wait: Histogram,
    compute_jobs: Vec<Counter>,
    /// Lent and free bytes of data buffers, the budget and its waits, read
    /// from [`crate::buffer`] at each scrape.
    buffer_lent: Gauge,
    buffer_free: Gauge,
    buffer_limit: Gauge,
    buffer_waits: Counter,
    /// What the gauges mirror; set once the server has started.
    load: OnceLock<Load>,
    #[cfg(feature = "admin")]
    runtimes: Mutex<Vec<RuntimeProbe>>,
}

/// The server state that gauges mirror at each scrape.
#[cfg_attr(not(feature = "admin"), allow(dead_code))]
pub(crate) struct Load {
    /// Connections admitted and not yet closed.
    pub(crate) active: Arc<AtomicUsize>,
    /// Connections waiting in hand-off queues.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Total capacity of the hand-off queues; 0 in `single`, which has none.
    pub(crate) capacity: usize,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn key(name: &'static str, labels: &[(&'static str, impl AsRef<str>)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(name, value)| Label::new(*name, value.as_ref().to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

/// The exposition with its families in name order, and the series of
/// each counter and gauge in label order. The exporter renders from hash
/// maps made afresh for each scrape, in an order that changes every time;
/// a person reading two scrapes, or a diff of them, needs one order. A
/// histogram's lines keep the exporter's order: buckets rising, then sum
/// and count.
#[cfg(feature = "admin")]
fn in_name_order(text: &str) -> String {
    let mut families: Vec<(&str, Vec<&str>)> = text
        .split("\n\n")
        .filter(|family| !family.trim().is_empty())
        .map(|family| {
            let mut lines: Vec<&str> = family.lines().collect();
            let series_from = lines
                .iter()
                .take_while(|line| line.starts_with('#'))
                .count();
            let kind = lines[..series_from]
                .iter()
                .find_map(|line| line.strip_prefix("# TYPE "))
                .map(|typed| typed.split(' ').collect::<Vec<_>>());
            let name = match kind.as_deref() {
                Some([name, ..]) => name,
                _ => lines
                    .get(series_from)
                    .map_or("", |line| line.split(['{', ' ']).next().unwrap_or("")),
            };
            if !matches!(kind.as_deref(), Some([_, "histogram" | "summary"])) {
                lines[series_from..].sort_unstable();
            }
            (name, lines)
        })
        .collect();
    families.sort_by(|a, b| a.0.cmp(b.0));
    let mut sorted = String::with_capacity(text.len());
    for (_, lines) in families {
        for line in lines {
            sorted.push_str(line);
            sorted.push('\n');
        }
        sorted.push('\n');
    }
    sorted
}

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// The recorder, with the buckets of the histograms whose range the
/// exporter's defaults do not fit.
#[cfg(feature = "admin")]
fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("tandem_handoff_wait_seconds".into()),
            &HANDOFF_WAIT_BUCKETS,
        )
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("tandem_compute_wait_seconds".into()),
                &COMPUTE_WAIT_BUCKETS,
            )
        })
        // Fixed, non-empty lists: the builder rejects only an empty one.
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

#[cfg(not(feature = "admin"))]
fn recorder() -> Registry {
    metrics::NoopRecorder
}

/// Registers the fixed series with the recorder, each once, at start-up.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.0.register_counter(&key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.0.register_gauge(&key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str) -> Histogram {
        self.0
            .register_histogram(&key(name, &[] as &[(_, &str)]), &METADATA)
    }

    /// A label set's series, one per variant.
    fn series(
        &self,
        name: &'static str,
        label: &'static str,
        values: &[&'static str],
    ) -> Vec<Counter> {
        values
            .iter()
            .map(|value| self.counter(name, &[(label, value)]))
            .collect()
    }
}

impl Metrics {
    /// An empty registry with every fixed series at zero.
    pub fn new() -> Self {
        let recorder = recorder();
        // The exporter keeps one description per name, whatever its kind.
        for &(name, help) in HELP {
            recorder.describe_counter(name.into(), None, SharedString::const_str(help));
        }
        let r = Registrar(&recorder);
        let inner = Inner {
            accepted: r.counter("tandem_connections_accepted_total", &[]),
            rejected: r.counter("tandem_connections_rejected_total", &[]),
            aborted: r.counter("tandem_connections_aborted_total", &[]),
            closed: r.series(
                "tandem_connections_closed_total",
                "reason",
                CloseReason::LABELS,
            ),
            accept_errors: r.series("tandem_accept_errors_total", "kind", AcceptError::LABELS),
            proxy_header_errors: r.series(
                "tandem_proxy_header_errors_total",
                "kind",
                ProxyHeaderError::LABELS,
            ),
            tls_handshake_errors: r.series(
                "tandem_tls_handshake_errors_total",
                "kind",
                TlsHandshakeError::LABELS,
            ),
            udp_datagrams: r.series("tandem_udp_datagrams_total", "outcome", UdpOutcome::LABELS),
            bytes_received: r.counter("tandem_bytes_received_total", &[]),
            bytes_sent: r.counter("tandem_bytes_sent_total", &[]),
            totals: Arc::new(Totals::default()),
            active: r.gauge("tandem_connections_active", &[]),
            max: r.gauge("tandem_connections_max", &[]),
            queue_depth: r.gauge("tandem_handoff_queue_depth", &[]),
            queue_capacity: r.gauge("tandem_handoff_queue_capacity", &[]),
            handoff_wait: r.histogram("tandem_handoff_wait_seconds"),
            compute_depth: r.gauge("tandem_compute_queue_depth", &[]),
            compute_capacity: r.gauge("tandem_compute_queue_capacity", &[]),
            compute_wait: r.histogram("tandem_compute_wait_seconds"),
            compute_jobs: r.series(
                "tandem_compute_jobs_total",
                "outcome",
                ComputeOutcome::LABELS,
            ),
            buffer_lent: r.gauge("tandem_buffer_memory_bytes", &[("state", "lent")]),
            buffer_free: r.gauge("tandem_buffer_memory_bytes", &[("state", "free")]),
            buffer_limit: r.gauge("tandem_buffer_memory_limit_bytes", &[]),
            buffer_waits: r.counter("tandem_buffer_waits_total", &[]),
            load: OnceLock::new(),
            #[cfg(feature = "admin")]
            runtimes: Mutex::new(Vec::new()),
            #[cfg(feature = "admin")]
            handle: recorder.handle(),
            recorder,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// The whole registry in the Prometheus text exposition format, with
    /// the gauges that mirror server state read now. With the `admin`
    /// feature, which builds the exporter.
    #[cfg(feature = "admin")]
    pub fn render(&self) -> String {
        let inner = &*self.inner;
        if let Some(load) = inner.load.get() {
            inner.active.set(load.active.load(Ordering::Relaxed) as f64);
            inner
                .queue_depth
                .set(load.queued.load(Ordering::Relaxed) as f64);
            inner.queue_capacity.set(load.capacity as f64);
        }
        let buffers = crate::buffer::memory();
        inner.buffer_lent.set(buffers.lent as f64);
        inner.buffer_free.set(buffers.free as f64);
        inner.buffer_limit.set(buffers.limit as f64);
        inner.buffer_waits.absolute(buffers.waits as u64);
        let (received, sent) = inner.totals.read();
        inner.bytes_received.absolute(received);
        inner.bytes_sent.absolute(sent);
        let mut text = inner.handle.render();
        let probes = inner
            .runtimes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        RuntimeProbe::render_busy_seconds(&probes, &mut text);
        in_name_order(&text)
    }

    /// [`tick`](Self::tick), once a second, for as long as the runtime it
    /// is spawned on runs. Every server runs one.
    pub(crate) async fn tick_every_second(self) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.tick();
        }
    }

    /// The once-a-second work: samples every runtime (see `runtimes`), and
    /// folds the histogram samples recorded since the last tick into their
    /// buckets, so that a server nobody scrapes does not accumulate them.
    pub(crate) fn tick(&self) {
        // Free mapped buffers unused for a second go back to the system.
        crate::buffer::trim();
        #[cfg(feature = "admin")]
        self.sample();
    }

    /// The exposition's share of the tick.
    #[cfg(feature = "admin")]
    fn sample(&self) {
        self.inner.handle.run_upkeep();
        let mut probes = self
            .inner
            .runtimes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for probe in probes.iter_mut() {
            probe.sample();
        }
    }

    /// Without the exposition, there is nothing to watch a runtime for.
    #[cfg(not(feature = "admin"))]
    pub(crate) fn watch_runtime(&self, _label: &str, _handle: &tokio::runtime::Handle) {}

    /// Starts watching a runtime, under `runtime="<label>"`. Its series
    /// exist from this call on.
    #[cfg(feature = "admin")]
    pub(crate) fn watch_runtime(&self, label: &str, handle: &tokio::runtime::Handle) {
        let recorder = &self.inner.recorder;
        let labels = [("runtime", label.to_owned())];
        let gauge = |name| recorder.register_gauge(&key(name, &labels), &METADATA);
        #[cfg(tokio_unstable)]
        let counter = |name| recorder.register_counter(&key(name, &labels), &METADATA);
        let mut probe = RuntimeProbe::new(
            label,
            handle,
            runtimes::Series {
                workers: gauge("tandem_runtime_workers"),
                busy_ratio: gauge("tandem_runtime_busy_ratio"),
                global_queue_depth: gauge("tandem_runtime_global_queue_depth"),
                alive_tasks: gauge("tandem_runtime_alive_tasks"),
                #[cfg(tokio_unstable)]
                io_driver_ready: counter("tandem_runtime_io_driver_ready_total"),
            },
        );
        probe.sample();
        self.inner
            .runtimes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(probe);
    }

    /// Gives the gauges the server state they mirror.
    pub(crate) fn watch_load(&self, load: Load) {
        // Set once per server; a second call would be a bug, and keeping
        // the first is harmless.
        let _ = self.inner.load.set(load);
    }

    /// Records the connection limit in force.
    pub(crate) fn connection_limit(&self, limit: usize) {
        self.inner.max.set(limit as f64);
    }

    /// The shared totals that thread-local tallies flush into.
    pub(crate) fn totals(&self) -> &Arc<Totals> {
        &self.inner.totals
    }

    pub(crate) fn connection_accepted(&self) {
        self.inner.accepted.increment(1);
    }

    pub(crate) fn connection_rejected(&self) {
        self.inner.rejected.increment(1);
    }

    /// A connection about to close with a reset, its echo dropped.
    pub(crate) fn connection_aborted(&self) {
        self.inner.aborted.increment(1);
    }

    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed(reason, 1);
    }

    pub(crate) fn connections_closed(&self, reason: CloseReason, count: usize) {
        self.inner.closed[reason as usize].increment(count as u64);
    }

    /// Counts a UDP datagram and what became of it.
    pub(crate) fn udp_datagram(&self, outcome: UdpOutcome) {
        self.inner.udp_datagrams[outcome as usize].increment(1);
    }

    /// Counts a connection closed for its PROXY header.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn proxy_header_error(&self, kind: ProxyHeaderError) {
        self.inner.proxy_header_errors[kind as usize].increment(1);
    }

    /// Counts a failed TLS handshake.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_handshake_error(&self, kind: TlsHandshakeError) {
        self.inner.tls_handshake_errors[kind as usize].increment(1);
    }

    /// Counts an accept error.
    pub(crate) fn accept_error(&self, kind: AcceptError) {
        self.inner.accept_errors[kind as usize].increment(1);
    }

    pub(crate) fn handoff_waited(&self, wait: Duration) {
        self.inner.handoff_wait.record(wait.as_secs_f64());
    }

    /// Records the compute queue's capacity.
    pub(crate) fn compute_capacity(&self, capacity: usize) {
        self.inner.compute_capacity.set(capacity as f64);
    }

    /// A compute job got its slot after waiting `wait`.
    pub(crate) fn compute_admitted(&self, wait: Duration) {
        self.inner.compute_wait.record(wait.as_secs_f64());
        self.inner.compute_depth.increment(1.0);
    }

    /// A compute job left its slot.
    pub(crate) fn compute_finished(&self, outcome: ComputeOutcome) {
        self.inner.compute_depth.decrement(1.0);
        self.inner.compute_jobs[outcome as usize].increment(1);
    }
}
