//! Per-runtime figures, sampled once a second.
//!
//! Each of the server's tokio runtimes (`acceptor`, `worker`, `shard-N`,
//! `admin`) has a [`RuntimeProbe`]: a tokio-metrics interval iterator over
//! tokio's stable runtime metrics, and the series it sets. Busy time is
//! exported twice: as the ratio of the last interval, for dashboards and
//! alerts, and as a running total, so that a client (`tandem bench
//! --server-metrics`) can compute the ratio over any window of its own.

#[cfg(tokio_unstable)]
use metrics::Counter;
use metrics::Gauge;
use tokio_metrics::{RuntimeIntervals, RuntimeMonitor};

/// The series of one runtime.
pub(crate) struct Series {
    pub(crate) workers: Gauge,
    pub(crate) busy_ratio: Gauge,
    pub(crate) global_queue_depth: Gauge,
    pub(crate) alive_tasks: Gauge,
    #[cfg(tokio_unstable)]
    pub(crate) io_driver_ready: Counter,
}

/// One runtime under watch.
pub(crate) struct RuntimeProbe {
    label: String,
    intervals: RuntimeIntervals,
    series: Series,
    /// Busy time summed over workers since the probe started. The
    /// exporter's counters are integers, so this one is rendered by
    /// [`RuntimeProbe::render_busy_seconds`].
    busy_seconds: f64,
}

impl RuntimeProbe {
    pub(crate) fn new(label: &str, handle: &tokio::runtime::Handle, series: Series) -> Self {
        RuntimeProbe {
            label: label.to_owned(),
            intervals: RuntimeMonitor::new(handle).intervals(),
            series,
            busy_seconds: 0.0,
        }
    }

    /// Writes `tandem_runtime_busy_seconds_total` for `probes` in the
    /// Prometheus text format.
    pub(crate) fn render_busy_seconds(probes: &[RuntimeProbe], out: &mut String) {
        use std::fmt::Write;
        const NAME: &str = "tandem_runtime_busy_seconds_total";
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {NAME} Time each runtime's workers spent busy, summed over workers.\n\
             # TYPE {NAME} counter"
        );
        for probe in probes {
            let _ = writeln!(
                out,
                "{NAME}{{runtime=\"{}\"}} {}",
                probe.label, probe.busy_seconds
            );
        }
        out.push('\n');
    }

    /// Reads the interval since the last sample and updates the series.
    pub(crate) fn sample(&mut self) {
        let Some(interval) = self.intervals.next() else {
            return;
        };
        let series = &self.series;
        series.workers.set(interval.workers_count as f64);
        series.alive_tasks.set(interval.live_tasks_count as f64);
        series
            .global_queue_depth
            .set(interval.global_queue_depth as f64);
        let busy = interval.total_busy_duration.as_secs_f64();
        let capacity = interval.elapsed.as_secs_f64() * interval.workers_count as f64;
        if capacity > 0.0 {
            series.busy_ratio.set((busy / capacity).clamp(0.0, 1.0));
        }
        self.busy_seconds += busy;
        #[cfg(tokio_unstable)]
        series
            .io_driver_ready
            .increment(interval.io_driver_ready_count);
    }
}
