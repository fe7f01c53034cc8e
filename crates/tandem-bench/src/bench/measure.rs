//! What every run does whatever it goes over (TCP, TLS, churn or UDP):
//! the warm-up and the window, the pacing of each connection, the progress
//! bar, the server's scrapes around the window, and the report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::Pacing;
use super::error::BenchError;
use super::options::BenchOptions;
use super::pattern::Block;
use super::report::{Latency, Report};
use super::server_metrics::{self, ScrapeError, ServerFigures, ServerWatch, Snapshot, WINDOW_LEAD};
use super::stats::Stats;

/// What a run's load starts its tasks with (see [`measure`]).
pub(super) struct Load<'a> {
    /// The random bytes every connection's pattern is cut from.
    pub(super) block: &'a Block,
    /// When the load starts: the warm-up, then the window.
    pub(super) start: Instant,
    pub(super) stats: &'a Arc<Stats>,
    /// Every task of the load, one per connection (or socket, or churner).
    pub(super) tasks: &'a mut JoinSet<()>,
}

/// What a run does whatever it goes over: it starts watching the server
/// before the first connection opens (`open`), runs the load `spawn`
/// starts through the warm-up and the window with the progress bar and the
/// server's scrapes around the window, and reports.
pub(super) async fn measure<T>(
    options: &BenchOptions,
    show_progress: bool,
    open: impl Future<Output = Result<T, BenchError>>,
    spawn: impl FnOnce(T, Load<'_>),
) -> Result<Report, BenchError> {
    let block = pattern_block(options);
    // Before the first connection: the server's figures then count every
    // connection of the run, and a wrong URL fails before any load.
    let mut watch = match &options.server_metrics {
        Some(url) => Some(ServerWatch::begin(url.clone()).await?),
        None => None,
    };
    let opened = open.await?;

    // The window's first scrape must be answered before the window opens:
    // it starts a little ahead of it, or, when the warm-up is too short for
    // that, before the load starts.
    let scrape_before_load = watch.is_some() && options.warmup.0 < WINDOW_LEAD;
    let early_scrape = match (&watch, scrape_before_load) {
        (Some(watch), true) => Some(server_metrics::scrape(watch.url()).await?),
        _ => None,
    };
    let start = Instant::now();
    let opens = start + options.warmup.0;
    if let (Some(watch), Some(snapshot)) = (watch.as_mut(), early_scrape) {
        watch.window_opened(snapshot, opens);
    }
    // Otherwise the window stays shut until the scrape before it is
    // answered, so that the server's count holds every byte the client
    // counts however late the answer comes.
    let hold = watch.is_some() && !scrape_before_load;
    let stats = Arc::new(if hold {
        Stats::held(opens.into_std(), options.duration.0)
    } else {
        Stats::new(opens.into_std(), options.duration.0)
    });
    let mut tasks = JoinSet::new();
    spawn(
        opened,
        Load {
            block: &block,
            start,
            stats: &stats,
            tasks: &mut tasks,
        },
    );

    let bar = show_progress.then(|| progress_bar(options));
    let window_scrape = async {
        let url = watch.as_ref().filter(|_| hold)?.url();
        tokio::time::sleep_until(opens.checked_sub(WINDOW_LEAD).unwrap_or(start)).await;
        let scraped = server_metrics::scrape(url).await;
        stats.open_at(std::time::Instant::now());
        Some(scraped)
    };
    let (cpu_at_start, window_scrape) = tokio::join!(
        watch_window(&stats, &mut tasks, bar.as_ref(), start),
        window_scrape
    );
    let cpu_used = cpu_time().saturating_sub(cpu_at_start);
    while tasks.join_next().await.is_some() {}
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let server = match watch {
        Some(watch) => Some(server_figures(watch, window_scrape, opens).await?),
        None => None,
    };
    Ok(Report {
        server,
        ..report(options, &stats, cpu_used)
    })
}

/// The random bytes every connection's pattern of the run is cut from,
/// seeded from the clock so that no two runs send the same bytes.
fn pattern_block(options: &BenchOptions) -> Block {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5EED, |since| since.as_nanos() as u64);
    Block::new(options.message_size, seed, options.expect_newline)
}

/// The server's figures once the load is over: `window_scrape`, if the
/// window waited for one, opened the window at `opens`.
async fn server_figures(
    mut watch: ServerWatch,
    window_scrape: Option<Result<Snapshot, ScrapeError>>,
    opens: Instant,
) -> Result<ServerFigures, BenchError> {
    if let Some(snapshot) = window_scrape.transpose()? {
        watch.window_opened(snapshot, opens);
    }
    Ok(watch.finish().await?)
}

/// When connection (or socket) `id` of `count` sends: in the open loop on
/// a schedule, every count/rate seconds, the connections spread evenly
/// over that interval; in the closed loop, whenever fewer than
/// `--pipeline` messages are in flight.
pub(super) fn pacing(options: &BenchOptions, start: Instant, id: usize, count: usize) -> Pacing {
    match options.rate {
        Some(rate) => Pacing::Open {
            first: start + Duration::from_secs_f64(id as f64 / rate),
            interval: Duration::from_secs_f64(count as f64 / rate),
        },
        None => Pacing::Closed {
            pipeline: options.pipeline,
        },
    }
}

/// Waits through warm-up and window, updating the progress bar; returns
/// the process's CPU time at the start of the window.
async fn watch_window(
    stats: &Stats,
    tasks: &mut JoinSet<()>,
    bar: Option<&ProgressBar>,
    start: Instant,
) -> Duration {
    let from = Instant::from_std(stats.planned_from());
    let until = Instant::from_std(stats.measure_until);
    let mut cpu_at_start = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(from), if cpu_at_start.is_none() => {
                cpu_at_start = Some(cpu_time());
            }
            () = tokio::time::sleep_until(until) => break,
            // Every task has ended early (each failed): nothing to wait for.
            joined = tasks.join_next() => if joined.is_none() { break },
        }
        if let Some(bar) = bar {
            let now = Instant::now();
            let done = stats.progress.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
            last = (now, done);
            bar.set_position((now - start).as_millis() as u64);
            bar.set_message(format!("{rate:.0} msg/s"));
        }
    }
    cpu_at_start.unwrap_or_else(cpu_time)
}

fn progress_bar(options: &BenchOptions) -> ProgressBar {
    let total = options.warmup.0 + options.duration.0;
    let bar = ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed}] {wide_bar} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let to_duration = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        to_duration(usage.user_time()) + to_duration(usage.system_time())
    })
}

fn report(options: &BenchOptions, stats: &Stats, cpu: Duration) -> Report {
    // The window as it was open: shorter than --duration if it opened late.
    // An empty one (it never opened) counted nothing: its rates are 0.
    let seconds = stats.window().as_secs_f64().max(f64::MIN_POSITIVE);
    let messages = stats.messages.load(Ordering::Relaxed);
    let sent_rate = options
        .rate
        .map(|_| stats.sent.load(Ordering::Relaxed) as f64 / seconds);
    Report {
        mode: options.mode(),
        transport: options.transport(),
        target: options.target.to_string(),
        connections: options.connections,
        message_size: options.message_size,
        pipeline: if options.rate.is_some() || options.churn {
            1
        } else {
            options.pipeline
        },
        messages,
        errors: stats.errors.load(Ordering::Relaxed),
        duration_secs: seconds,
        msgs_per_sec: messages as f64 / seconds,
        bytes_per_sec: stats.bytes.load(Ordering::Relaxed) as f64 / seconds,
        latency_us: Latency::of(&stats.histogram()),
        target_rate: options.rate,
        sent_rate,
        kept_up: options
            .rate
            .zip(sent_rate)
            .map(|(target, sent)| sent >= 0.95 * target),
        connects_per_sec: options
            .churn
            .then(|| stats.connects.load(Ordering::Relaxed) as f64 / seconds),
        // Over UDP, filled in by the UDP run; over TLS, by the TLS run.
        lost: None,
        loss_ratio: None,
        tls_handshakes: None,
        generator_cpu_us_per_msg: if messages == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / messages as f64
        },
        first_error: stats.first_error(),
        server: None,
    }
}
