//! The offload section: light clients beside heavy ones on one server whose
//! handler does CPU work in proportion to each chunk it echoes, with that
//! work inline on the serving threads, through tokio's `spawn_blocking`, or
//! on a compute runtime of its own.
//!
//! A sample loads one server with two groups at once, over the same
//! warm-up and window: the light group, small messages in the open loop at
//! a fixed rate, each timed from when it was due, so that a serving thread
//! held by a heavy chunk shows in the light tail; and the heavy group,
//! large messages in the closed loop, whose throughput says what the
//! offloading costs or gains. The two groups' figures are kept apart, beside
//! the CPU the server used over the window.
//!
//! The section owns the list of variants ([`VARIANTS`]) and the mixed load;
//! it drives the load generator only through its library, two runs side by
//! side, and never changes what either run measures.

use std::time::Instant;

use serde::Serialize;

use super::cells::median;
use super::cost;
use super::error::SuiteError;
use super::measure;
use super::plan::Plan;
use super::servers::{RunningServer, ServerSpec};
use crate::bench::{self, BenchError, BenchOptions, Report};

/// CPU work per KiB of each chunk (`--simulate-work <N>us/KiB`): a heavy
/// 64 KiB message costs the server 12.8 ms, a light 64 B one 12.5 µs,
/// under the server's default `--offload-above` of 50 µs, so that light
/// messages are always worked on where they are read.
pub const WORK_US_PER_KIB: u64 = 200;

/// Serving threads of every variant: a fixed count, so that the variants
/// differ only in where the heavy work runs, whatever the machine.
const WORKERS: &str = "2";

/// The variants, each `split` with [`common_flags`] and then its own
/// flags. The first is the baseline the light p99 is divided by.
pub const VARIANTS: [(&str, &[&str]); 4] = [
    ("inline", &["--compute-threads", "0"]),
    // Kept beside the compute runtime so that the choice of the runtime
    // stays a measured one: the same two threads, but jobs go through the
    // blocking pool's queue.
    (
        "spawn-blocking",
        &["--compute-threads", "2", "--compute-via", "spawn-blocking"],
    ),
    ("compute-1", &["--compute-threads", "1"]),
    ("compute-2", &["--compute-threads", "2"]),
];

/// The light group: 64 B messages from 10 connections in the open loop,
/// 2000 a second in all; enough samples for a p99.9 in a one-second
/// window, too few to load the server by themselves.
pub const LIGHT: Group = Group {
    message_size: 64,
    connections: 10,
    pipeline: 1,
    rate: Some(2000.0),
};

/// The heavy group: 64 KiB messages from 4 connections in the closed loop,
/// one in flight each: enough to keep two workers, or two compute
/// threads, busy.
pub const HEAVY: Group = Group {
    message_size: 64 * 1024,
    connections: 4,
    pipeline: 1,
    rate: None,
};

const MIB: f64 = 1024.0 * 1024.0;

/// One group of clients of the mixed load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Group {
    pub message_size: usize,
    pub connections: usize,
    /// Messages in flight per connection, in the closed loop.
    pub pipeline: usize,
    /// Open loop: messages per second over all the connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

impl Group {
    /// Its message size for people: `64 B`, `64 KiB`.
    pub fn size(&self) -> String {
        match self.message_size {
            bytes if bytes >= 1024 && bytes % 1024 == 0 => format!("{} KiB", bytes / 1024),
            bytes => format!("{bytes} B"),
        }
    }

    fn apply(&self, options: &mut BenchOptions) {
        options.message_size = self.message_size;
        options.connections = self.connections;
        options.pipeline = self.pipeline;
        options.rate = self.rate;
    }
}

/// The flags every variant adds to `serve --layout split`.
pub fn common_flags() -> Vec<String> {
    vec![
        "--workers".to_owned(),
        WORKERS.to_owned(),
        "--simulate-work".to_owned(),
        format!("{WORK_US_PER_KIB}us/KiB"),
    ]
}

/// The offload section of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Offload {
    /// CPU work per KiB of each chunk, in microseconds.
    pub work_us_per_kib: u64,
    /// The flags of every variant after `serve --layout split`.
    pub common_flags: Vec<String>,
    pub light: Group,
    pub heavy: Group,
    /// In the order of `VARIANTS`.
    pub variants: Vec<Variant>,
}

impl Offload {
    /// Load generator errors over every sample of the section.
    pub fn errors(&self) -> u64 {
        self.variants.iter().map(|variant| variant.errors).sum()
    }
}

/// One server variant's figures over its samples.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    /// Its own flags, after the common ones.
    pub flags: Vec<String>,
    /// Each figure's median, min and max over the samples.
    pub figures: Figures<Spread>,
    /// Its light p99 median over the first variant's (inline); `None`
    /// when that is missing or 0.
    pub light_p99_vs_inline: Option<f64>,
    /// Load generator errors over its samples, both groups.
    pub errors: u64,
    pub samples: Vec<MixedSample>,
}

/// The figures of one sample (`Figures<f64>`), or their spread over a
/// variant's samples (`Figures<Spread>`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures<T> {
    /// Light messages' round trip, from when each was due.
    pub light_p50_ms: T,
    pub light_p99_ms: T,
    pub light_p999_ms: T,
    /// Light messages echoed per second: below the group's rate when the
    /// generator or the server fell behind.
    pub light_msgs_per_sec: T,
    /// Heavy payload echoed, in MiB per second.
    pub heavy_mib_per_sec: T,
    /// CPU seconds the server's threads used per second of the window,
    /// user and system together: the cores it kept busy.
    pub server_cpu_per_sec: T,
}

/// A figure's median, min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all 0 when there are none.
    pub fn of(values: Vec<f64>) -> Spread {
        let min = values.iter().copied().reduce(f64::min).unwrap_or(0.0);
        let max = values.iter().copied().reduce(f64::max).unwrap_or(0.0);
        Spread {
            median: median(values).unwrap_or(0.0),
            min,
            max,
        }
    }
}

impl Figures<f64> {
    /// One sample's figures from the two groups' reports and the server's
    /// CPU over the window.
    pub fn of(light: &Report, heavy: &Report, cpu: &CpuSpent) -> Figures<f64> {
        let ms = |us: u64| us as f64 / 1e3;
        Figures {
            light_p50_ms: ms(light.latency_us.p50),
            light_p99_ms: ms(light.latency_us.p99),
            light_p999_ms: ms(light.latency_us.p999),
            light_msgs_per_sec: light.msgs_per_sec,
            heavy_mib_per_sec: heavy.bytes_per_sec / MIB,
            server_cpu_per_sec: cpu.per_sec(),
        }
    }
}

impl Figures<Spread> {
    /// The spread of each figure over `samples`.
    pub fn over(samples: &[Figures<f64>]) -> Figures<Spread> {
        let spread =
            |figure: fn(&Figures<f64>) -> f64| Spread::of(samples.iter().map(figure).collect());
        Figures {
            light_p50_ms: spread(|f| f.light_p50_ms),
            light_p99_ms: spread(|f| f.light_p99_ms),
            light_p999_ms: spread(|f| f.light_p999_ms),
            light_msgs_per_sec: spread(|f| f.light_msgs_per_sec),
            heavy_mib_per_sec: spread(|f| f.heavy_mib_per_sec),
            server_cpu_per_sec: spread(|f| f.server_cpu_per_sec),
        }
    }
}

/// CPU time a server used over a stretch of wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuSpent {
    /// User plus system time of all its threads, from `/proc/PID/stat`.
    pub cpu_secs: f64,
    pub wall_secs: f64,
}

impl CpuSpent {
    /// CPU seconds per second of wall-clock time; 0 over no time.
    pub fn per_sec(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.cpu_secs / self.wall_secs
        } else {
            0.0
        }
    }
}

/// One run of the mixed load against one server.
#[derive(Debug, Clone, Serialize)]
pub struct MixedSample {
    pub figures: Figures<f64>,
    /// The light group's report; it scraped the server, so it carries the
    /// server's own figures (`light.server`).
    pub light: Report,
    pub heavy: Report,
    /// The server's CPU over the window, timed by the suite from the end
    /// of the warm-up as it planned it: each group's own window opens once
    /// its connections are up, a few milliseconds later.
    pub cpu: CpuSpent,
}

impl Variant {
    fn of(name: &str, flags: &[&str], samples: Vec<MixedSample>) -> Variant {
        let figures: Vec<Figures<f64>> = samples.iter().map(|sample| sample.figures).collect();
        Variant {
            name: name.to_owned(),
            flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
            figures: Figures::over(&figures),
            light_p99_vs_inline: None,
            errors: samples
                .iter()
                .map(|sample| sample.light.errors + sample.heavy.errors)
                .sum(),
            samples,
        }
    }
}

/// Sets each variant's light p99 over the first variant's.
fn compare_with_first(variants: &mut [Variant]) {
    let Some(baseline) = variants
        .first()
        .map(|first| first.figures.light_p99_ms.median)
    else {
        return;
    };
    for variant in variants {
        variant.light_p99_vs_inline =
            (baseline > 0.0).then(|| variant.figures.light_p99_ms.median / baseline);
    }
}

/// An offload section built by hand, one variant per `(name, light p99
/// ms, heavy MiB/s)` with a single sample's figures and no reports, for
/// the tests of what reads it.
#[cfg(test)]
pub(crate) fn section_of(variants: &[(&str, f64, f64)]) -> Offload {
    let mut variants: Vec<Variant> = variants
        .iter()
        .map(|&(name, light_p99_ms, heavy_mib_per_sec)| {
            let figures = Figures {
                light_p50_ms: light_p99_ms / 4.0,
                light_p99_ms,
                light_p999_ms: light_p99_ms * 2.0,
                light_msgs_per_sec: 2000.0,
                heavy_mib_per_sec,
                server_cpu_per_sec: 1.5,
            };
            Variant {
                name: name.to_owned(),
                flags: vec!["--compute-threads".to_owned(), "1".to_owned()],
                figures: Figures::over(&[figures]),
                light_p99_vs_inline: None,
                errors: 0,
                samples: Vec::new(),
            }
        })
        .collect();
    compare_with_first(&mut variants);
    Offload {
        work_us_per_kib: WORK_US_PER_KIB,
        common_flags: common_flags(),
        light: LIGHT,
        heavy: HEAVY,
        variants,
    }
}

/// The offload section: the mixed load on every variant, `plan.runs`
/// samples each, the variants taking turns.
pub fn measure(plan: &Plan, servers: &[ServerSpec]) -> Result<Offload, SuiteError> {
    let split = measure::split(servers, "offload")?;
    let common = common_flags();
    let common: Vec<&str> = common.iter().map(String::as_str).collect();
    let specs: Vec<ServerSpec> = VARIANTS
        .iter()
        .map(|(name, flags)| split.with_args(&common).with_args(flags).named(name))
        .collect();
    measure::progress(&format!(
        "offload: {} x {} at {}/s beside {} x {}, {WORK_US_PER_KIB} µs of work per KiB",
        LIGHT.connections,
        LIGHT.size(),
        LIGHT.rate.unwrap_or(0.0),
        HEAVY.connections,
        HEAVY.size(),
    ));
    let taken = measure::take_turns(&specs, plan.runs, |index, running| {
        mixed_sample(plan, &specs[index].name, running)
    })?;
    let mut variants: Vec<Variant> = VARIANTS
        .iter()
        .zip(taken)
        .map(|((name, flags), samples)| Variant::of(name, flags, samples))
        .collect();
    compare_with_first(&mut variants);
    Ok(Offload {
        work_us_per_kib: WORK_US_PER_KIB,
        common_flags: common_flags(),
        light: LIGHT,
        heavy: HEAVY,
        variants,
    })
}

/// Both groups against `running` at once, each its own load generator run
/// on a thread of its own, while this thread times the server's CPU over
/// the window.
fn mixed_sample(
    plan: &Plan,
    server: &str,
    running: &RunningServer,
) -> Result<MixedSample, SuiteError> {
    // Only the light group scrapes the server: one run's scrapes are
    // enough, and they carry the busy ratios of the window.
    let mut light = measure::load(plan, running);
    LIGHT.apply(&mut light);
    let mut heavy = measure::load(plan, running);
    heavy.server_metrics = None;
    HEAVY.apply(&mut heavy);
    let opens = Instant::now() + light.warmup.0;
    let closes = opens + light.duration.0;
    let (light, heavy, cpu) = std::thread::scope(|scope| {
        let light = scope.spawn(|| bench::run(&light, false));
        let heavy = scope.spawn(|| bench::run(&heavy, false));
        let cpu = cpu_over(running.pid(), opens, closes);
        (light.join(), heavy.join(), cpu)
    });
    let (light, heavy) = (
        finished(server, "light", light)?,
        finished(server, "heavy", heavy)?,
    );
    let cpu = cpu.map_err(|why| SuiteError::Cost {
        server: server.to_owned(),
        why,
    })?;
    Ok(MixedSample {
        figures: Figures::of(&light, &heavy, &cpu),
        light,
        heavy,
        cpu,
    })
}

/// The report of `group`'s run against `server`, or why there is none.
fn finished(
    server: &str,
    group: &str,
    outcome: std::thread::Result<Result<Report, BenchError>>,
) -> Result<Report, SuiteError> {
    measure::joined(
        format!("{server} ({group} group)"),
        &format!("the offload section's {group} load against {server}"),
        outcome,
    )
}

/// The CPU `pid` uses from `opens` to `closes`, read from /proc at each
/// end (USER_HZ ticks: 10 ms, a percent of a core over a second).
fn cpu_over(pid: u32, opens: Instant, closes: Instant) -> Result<CpuSpent, String> {
    sleep_until(opens);
    let (before, from) = (cost::proc_cpu_secs(pid)?, Instant::now());
    sleep_until(closes);
    let (after, to) = (cost::proc_cpu_secs(pid)?, Instant::now());
    Ok(CpuSpent {
        cpu_secs: (after - before).max(0.0),
        wall_secs: to.duration_since(from).as_secs_f64(),
    })
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(light_p99_ms: f64, heavy_mib_per_sec: f64) -> Figures<f64> {
        Figures {
            light_p50_ms: light_p99_ms / 10.0,
            light_p99_ms,
            light_p999_ms: light_p99_ms * 2.0,
            light_msgs_per_sec: 2000.0,
            heavy_mib_per_sec,
            server_cpu_per_sec: 1.5,
        }
    }

    fn variant(name: &str, light_p99_ms: &[f64]) -> Variant {
        let samples: Vec<Figures<f64>> =
            light_p99_ms.iter().map(|&p99| figures(p99, 8.0)).collect();
        Variant {
            name: name.to_owned(),
            flags: Vec::new(),
            figures: Figures::over(&samples),
            light_p99_vs_inline: None,
            errors: 0,
            samples: Vec::new(),
        }
    }

    #[test]
    fn each_figure_spreads_to_its_median_min_and_max_over_the_samples() {
        let spread = Figures::over(&[figures(9.0, 6.0), figures(3.0, 10.0), figures(6.0, 7.0)]);
        assert_eq!(
            spread.light_p99_ms,
            Spread {
                median: 6.0,
                min: 3.0,
                max: 9.0
            }
        );
        assert_eq!(spread.heavy_mib_per_sec.median, 7.0);
        assert_eq!(spread.light_p999_ms.max, 18.0);
    }

    #[test]
    fn no_samples_spread_to_zero_rather_than_to_nothing() {
        assert_eq!(
            Spread::of(Vec::new()),
            Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0
            }
        );
    }

    #[test]
    fn each_light_p99_is_divided_by_the_first_variants() {
        let mut variants = [
            variant("inline", &[8.0, 10.0, 12.0]),
            variant("compute-2", &[1.0, 2.0, 9.0]),
        ];
        compare_with_first(&mut variants);
        assert_eq!(variants[0].light_p99_vs_inline, Some(1.0));
        assert_eq!(variants[1].light_p99_vs_inline, Some(0.2));
    }

    #[test]
    fn a_baseline_of_zero_gives_no_ratio() {
        let mut variants = [variant("inline", &[0.0]), variant("compute-1", &[1.0])];
        compare_with_first(&mut variants);
        assert_eq!(variants[1].light_p99_vs_inline, None);
    }

    /// A run's report with these latencies (µs) and rates.
    fn report(latency_us: [u64; 3], msgs_per_sec: f64, bytes_per_sec: f64) -> Report {
        let [p50, p99, p999] = latency_us;
        let latency = crate::bench::Latency {
            p50,
            p90: p99,
            p99,
            p999,
            max: p999,
        };
        Report::fixture(latency, msgs_per_sec, bytes_per_sec)
    }

    #[test]
    fn a_samples_figures_take_light_latency_in_ms_and_heavy_bytes_in_mib() {
        let light = report([120, 2_500, 13_000], 1990.0, 1990.0 * 64.0);
        let heavy = report([12_000, 40_000, 50_000], 120.0, 7.5 * MIB);
        let cpu = CpuSpent {
            cpu_secs: 1.8,
            wall_secs: 1.0,
        };
        let figures = Figures::of(&light, &heavy, &cpu);
        assert_eq!(
            figures,
            Figures {
                light_p50_ms: 0.12,
                light_p99_ms: 2.5,
                light_p999_ms: 13.0,
                light_msgs_per_sec: 1990.0,
                heavy_mib_per_sec: 7.5,
                server_cpu_per_sec: 1.8,
            }
        );
    }

    #[test]
    fn group_sizes_read_in_kib_when_whole() {
        assert_eq!(LIGHT.size(), "64 B");
        assert_eq!(HEAVY.size(), "64 KiB");
        let odd = Group {
            message_size: 1500,
            ..HEAVY
        };
        assert_eq!(odd.size(), "1500 B");
    }

    #[test]
    fn server_cpu_is_per_second_of_the_window_and_zero_over_none() {
        let cpu = CpuSpent {
            cpu_secs: 3.0,
            wall_secs: 2.0,
        };
        assert_eq!(cpu.per_sec(), 1.5);
        let none = CpuSpent {
            cpu_secs: 0.01,
            wall_secs: 0.0,
        };
        assert_eq!(none.per_sec(), 0.0);
    }

    #[test]
    fn the_first_variant_is_inline_and_every_variant_sets_its_compute_threads() {
        assert_eq!(VARIANTS[0].0, "inline");
        for (name, flags) in VARIANTS {
            assert!(flags.contains(&"--compute-threads"), "{name}: {flags:?}");
        }
        assert!(common_flags().ends_with(&["--simulate-work".to_owned(), "200us/KiB".to_owned()]));
    }
}
