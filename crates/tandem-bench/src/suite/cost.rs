//! What a server spends per echoed message: the syscalls it enters and the
//! CPU time it uses, counted from outside the server over exactly the load
//! generator's run.
//!
//! With `perf` (and the syscall tracepoints it needs: root, or a low
//! enough `kernel.perf_event_paranoid`), `perf stat -p PID` counts the
//! server's syscalls by kind and its CPU time (`task-clock`), all threads
//! together. perf is started with its counters off and is switched on and
//! off through its control descriptor (`--control fd:0,1`: commands on its
//! stdin, acknowledgements on its stdout), so the counted window is the
//! load generator's run to the syscall, not perf's start-up and shut-down.
//!
//! Without perf, CPU time comes from `/proc/PID/stat` (user plus system
//! time, the figures getrusage gives) before and after the run, and there
//! are no syscall counts: absent, never zero.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

/// The perf events counted: the syscalls an echo server makes per message
/// (reads, writes, and its waits for readiness or for completions), every
/// syscall together, and CPU time.
pub const EVENTS: [&str; 10] = [
    READ[0], READ[1], WRITE[0], WRITE[1], WAIT[0], WAIT[1], URING, ALL, TASK_CLOCK, FUTEX,
];
/// Reads of a socket: std and mio read through `recv` (recvfrom), others
/// through `read`.
pub const READ: [&str; 2] = ["syscalls:sys_enter_recvfrom", "syscalls:sys_enter_read"];
/// Writes to a socket, likewise.
pub const WRITE: [&str; 2] = ["syscalls:sys_enter_sendto", "syscalls:sys_enter_write"];
/// Readiness waits: glibc's `epoll_wait` is either syscall, by architecture.
pub const WAIT: [&str; 2] = [
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
];
/// An io_uring server's one syscall: submitting and waiting for completions.
pub const URING: &str = "syscalls:sys_enter_io_uring_enter";
/// Every syscall entered.
pub const ALL: &str = "raw_syscalls:sys_enter";
/// CPU time, in milliseconds.
pub const TASK_CLOCK: &str = "task-clock";

/// Futex calls: how tokio wakes a parked worker, so where a layout's
/// threads hand work to each other, it shows here.
pub const FUTEX: &str = "syscalls:sys_enter_futex";

/// The metric of a cell of CPU time per message.
pub const CPU_METRIC: &str = "server CPU µs/msg";
/// The metric of a cell of read syscalls per message.
pub const READS_METRIC: &str = "read syscalls/msg";

/// The per-message syscall figures of a cost sample: each a cell's metric
/// and the events it adds up.
pub const FIGURES: [(&str, &[&str]); 6] = [
    (READS_METRIC, &READ),
    ("write syscalls/msg", &WRITE),
    ("epoll waits/msg", &WAIT),
    ("io_uring_enter/msg", &[URING]),
    ("futex/msg", &[FUTEX]),
    ("syscalls/msg", &[ALL]),
];

/// What a server spent over one load generator run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// Messages echoed in the run, as the load generator counted them.
    pub messages: u64,
    /// Where the figures come from: `perf stat`, or `/proc/PID/stat`.
    pub source: &'static str,
    /// CPU time of the server's threads together, user plus system.
    pub cpu_secs: f64,
    /// perf's count of each syscall event over the run; `None` without
    /// perf, as nothing was counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<BTreeMap<String, u64>>,
}

impl Cost {
    /// CPU microseconds per message.
    pub fn cpu_us_per_msg(&self) -> Option<f64> {
        per_message(self.cpu_secs * 1e6, self.messages)
    }

    /// The `events` together, per message; `None` without syscall counts,
    /// or if any of them was not counted.
    pub fn syscalls_per_msg(&self, events: &[&str]) -> Option<f64> {
        let counts = self.syscalls.as_ref()?;
        let total = events
            .iter()
            .map(|event| counts.get(*event).copied())
            .sum::<Option<u64>>()?;
        per_message(total as f64, self.messages)
    }
}

/// `total` spread over `messages`; `None` when no message was echoed, as
/// the figure would mean nothing.
pub fn per_message(total: f64, messages: u64) -> Option<f64> {
    (messages > 0).then(|| total / messages as f64)
}

/// How a server's costs are counted on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "with", rename_all = "lowercase")]
pub enum Counter {
    /// `perf stat` with every event of `EVENTS`.
    Perf,
    /// `/proc/PID/stat`, for CPU only; `why` perf could not be used.
    Proc { why: String },
}

impl Counter {
    /// Tries `perf stat` once with every event on a trivial command; falls
    /// back to /proc, saying why, if it is missing or refuses any event.
    pub fn probe() -> Counter {
        let output = Command::new("perf")
            .args(["stat", "-x,", "-e", &EVENTS.join(","), "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output();
        let why = match output {
            Err(err) => format!("cannot run perf: {err}"),
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let counts = parse_csv(&stderr);
                let missing: Vec<&str> = EVENTS
                    .iter()
                    .filter(|event| !counts.contains_key(**event))
                    .copied()
                    .collect();
                if output.status.success() && missing.is_empty() {
                    return Counter::Perf;
                }
                let said = stderr
                    .lines()
                    .map(str::trim)
                    .find(|line| !line.is_empty() && !line.contains(','))
                    .unwrap_or("");
                format!(
                    "perf stat could not count {} ({}) {said}",
                    missing.join(", "),
                    output.status
                )
                .trim_end()
                .to_owned()
            }
        };
        Counter::Proc { why }
    }

    /// Starts counting `pid`'s costs; `Counting::finish` ends the count.
    pub fn start(&self, pid: u32) -> Result<Counting, String> {
        Ok(match self {
            Counter::Perf => Counting::Perf(Perf::start(pid)?),
            Counter::Proc { .. } => Counting::Proc {
                pid,
                cpu_before: proc_cpu_secs(pid)?,
            },
        })
    }
}

/// A count under way, from [`Counter::start`].
pub enum Counting {
    Perf(Perf),
    Proc { pid: u32, cpu_before: f64 },
}

impl Counting {
    /// Ends the count; `messages` is what the load generator echoed in the
    /// meantime.
    pub fn finish(self, messages: u64) -> Result<Cost, String> {
        match self {
            Counting::Perf(perf) => {
                let mut counts = perf.finish()?;
                let cpu_ms = counts
                    .remove(TASK_CLOCK)
                    .ok_or_else(|| "perf stat gave no task-clock".to_owned())?;
                let syscalls = counts
                    .into_iter()
                    .map(|(event, count)| (event, count.round() as u64))
                    .collect();
                Ok(Cost {
                    messages,
                    source: "perf stat",
                    cpu_secs: cpu_ms / 1e3,
                    syscalls: Some(syscalls),
                })
            }
            Counting::Proc { pid, cpu_before } => {
                let cpu_after = proc_cpu_secs(pid)?;
                Ok(Cost {
                    messages,
                    source: "/proc/PID/stat",
                    cpu_secs: (cpu_after - cpu_before).max(0.0),
                    syscalls: None,
                })
            }
        }
    }
}

/// `perf stat` attached to a server, its counters switched on.
pub struct Perf {
    child: Child,
    control: ChildStdin,
    acks: BufReader<ChildStdout>,
}

impl Perf {
    fn start(pid: u32) -> Result<Perf, String> {
        let mut child = Command::new("perf")
            .args(["stat", "-x,", "--delay", "-1", "--control", "fd:0,1", "-e"])
            .arg(EVENTS.join(","))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot run perf: {err}"))?;
        let (Some(control), Some(acks)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("perf's pipes were not set up".to_owned());
        };
        let mut perf = Perf {
            child,
            control,
            acks: BufReader::new(acks),
        };
        // On failure perf is dropped, which kills it.
        perf.command("enable")?;
        Ok(perf)
    }

    /// Sends `command` and waits for perf to say it is done.
    fn command(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.control, "{command}")
            .and_then(|()| self.control.flush())
            .map_err(|err| format!("perf stat did not take `{command}`: {err}"))?;
        let mut ack = String::new();
        self.acks
            .read_line(&mut ack)
            .map_err(|err| format!("perf stat did not answer `{command}`: {err}"))?;
        // perf may put a NUL before its answer.
        if ack.trim_matches(|c: char| c == '\0' || c.is_whitespace()) == "ack" {
            Ok(())
        } else {
            Err(format!("perf stat answered `{command}` with {ack:?}"))
        }
    }

    /// Switches the counters off, stops perf and reads its counts.
    fn finish(mut self) -> Result<BTreeMap<String, f64>, String> {
        self.command("disable")?;
        // perf stat -p counts until it is interrupted, then prints.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)
                .map_err(|err| format!("cannot read perf stat's output: {err}"))?;
        }
        let _ = self.child.wait();
        let counts = parse_csv(&stderr);
        if counts.is_empty() {
            return Err(format!("perf stat printed no counts: {}", stderr.trim()));
        }
        Ok(counts)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counts of `perf stat -x,` output: one `value,unit,event,...` line
/// per event. Events perf could not count (`<not counted>`,
/// `<not supported>`) are left out, and so are perf's other lines (its
/// header, `Events enabled`).
pub fn parse_csv(output: &str) -> BTreeMap<String, f64> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let value = fields.next()?.trim().parse::<f64>().ok()?;
            let _unit = fields.next()?;
            let event = fields.next()?.trim();
            // perf adds a `:u` or `:k` suffix when it counts one mode only.
            let event = event
                .strip_suffix(":u")
                .or_else(|| event.strip_suffix(":k"))
                .unwrap_or(event);
            (!event.is_empty() && value.is_finite()).then(|| (event.to_owned(), value))
        })
        .collect()
}

/// Clock ticks per second of `/proc/PID/stat`'s times: USER_HZ, which the
/// kernel's interface fixes at 100 whatever its own tick rate.
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds `pid` has used, all its threads together.
pub fn proc_cpu_secs(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat =
        std::fs::read_to_string(&path).map_err(|err| format!("cannot read {path}: {err}"))?;
    parse_stat_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .ok_or_else(|| format!("{path}: no utime and stime in {stat:?}"))
}

/// utime plus stime of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so the fields are counted from its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // After the name come state (field 3) ... utime (14) and stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What perf 6.1 printed for `perf stat -x, -e ... -p PID` run through
    /// its control descriptor.
    const PERF_OUTPUT: &str = "# started on Fri Nov 27 08:36:26 2026\n\
        \n\
        Events enabled\n\
        1204.51,msec,task-clock,1204513277,100.00,1.201,CPUs utilized\n\
        50123,,syscalls:sys_enter_recvfrom,1204513277,100.00,,\n\
        3,,syscalls:sys_enter_read,1204513277,100.00,,\n\
        50100,,syscalls:sys_enter_sendto,1204513277,100.00,,\n\
        <not counted>,,syscalls:sys_enter_write,0,0.00,,\n\
        20011,,syscalls:sys_enter_epoll_wait:u,1204513277,100.00,,\n\
        130400,,raw_syscalls:sys_enter,1204513277,100.00,108.259,K/sec\n\
        Events disabled\n";

    #[test]
    fn perf_csv_gives_each_counted_event_and_nothing_else() {
        let counts = parse_csv(PERF_OUTPUT);
        assert_eq!(counts.get("task-clock"), Some(&1204.51));
        assert_eq!(counts.get("syscalls:sys_enter_recvfrom"), Some(&50123.0));
        assert_eq!(counts.get("syscalls:sys_enter_epoll_wait"), Some(&20011.0));
        assert_eq!(counts.get("raw_syscalls:sys_enter"), Some(&130400.0));
        assert!(
            !counts.contains_key("syscalls:sys_enter_write"),
            "not counted"
        );
        assert_eq!(counts.len(), 6, "{counts:?}");
    }

    fn cost(messages: u64, syscalls: Option<&[(&str, u64)]>) -> Cost {
        Cost {
            messages,
            source: "perf stat",
            cpu_secs: 0.5,
            syscalls: syscalls.map(|counts| {
                counts
                    .iter()
                    .map(|&(event, count)| (event.to_owned(), count))
                    .collect()
            }),
        }
    }

    #[test]
    fn per_message_figures_divide_the_window_by_the_messages_echoed_in_it() {
        let counts = [(READ[0], 52_000), (READ[1], 3_000), (ALL, 200_000)];
        let cost = cost(50_000, Some(&counts));
        assert_eq!(cost.syscalls_per_msg(&READ), Some(1.1));
        assert_eq!(cost.syscalls_per_msg(&[ALL]), Some(4.0));
        assert_eq!(cost.cpu_us_per_msg(), Some(10.0));
    }

    #[test]
    fn uncounted_syscalls_are_absent_not_zero() {
        assert_eq!(cost(50_000, None).syscalls_per_msg(&READ), None);
        let only_one = cost(50_000, Some(&[(READ[0], 50_000)]));
        assert_eq!(only_one.syscalls_per_msg(&READ), None);
        assert_eq!(cost(0, Some(&[(ALL, 10)])).syscalls_per_msg(&[ALL]), None);
        assert_eq!(per_message(10.0, 0), None);
    }

    #[test]
    fn proc_stat_cpu_is_utime_plus_stime_past_a_name_with_spaces() {
        let stat = "4242 (tokio (runtime) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn this_process_has_used_some_cpu_according_to_proc() {
        let secs = proc_cpu_secs(std::process::id()).unwrap();
        assert!(secs >= 0.0);
    }
}
