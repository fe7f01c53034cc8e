//! The CPU split of `--client-cpus`: the load generator on some of the
//! suite's CPUs, every server on the others.
//!
//! On a small machine the load generator and the server share the cores,
//! and the scheduler decides who runs beside whom. A server with a thread
//! per core then competes with the generator for both cores, and its rate
//! depends on where the scheduler puts three busy threads on two CPUs
//! rather than on the server. With a split, each side has CPUs of its own,
//! as when the generator runs on another machine. Servers start a thread
//! per CPU they are given: tandem and the peers size themselves by
//! `available_parallelism`, which follows the affinity mask, and the suite
//! passes `--threads` to the peers from the same count.
//!
//! The suite's own thread is pinned to the generator's CPUs before it
//! measures, so that every thread it starts later (the generator's runtime,
//! `perf`) inherits them; each server is pinned between `fork` and `exec`.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use serde::Serialize;

use super::error::SuiteError;

/// A list of CPU numbers as `taskset -c` and `/proc/*/status` write it:
/// `0`, `0-3`, `0,2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The CPUs, ascending, each once.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    fn set(&self) -> Result<CpuSet, SuiteError> {
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            set.set(cpu)
                .map_err(|_| SuiteError::Invalid(format!("no CPU {cpu} on this system")))?;
        }
        Ok(set)
    }
}

impl std::str::FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<CpuList, String> {
        let number = |part: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("{part:?} is not a CPU number in {text:?}"))
        };
        let mut cpus = Vec::new();
        for range in text.split(',') {
            let (first, last) = match range.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => (number(range)?, number(range)?),
            };
            if first > last {
                return Err(format!("{range:?} runs backwards in {text:?}"));
            }
            if last >= CpuSet::count() {
                return Err(format!(
                    "CPU {last} is past the {} this system can name",
                    CpuSet::count()
                ));
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    /// Ranges collapsed, as `taskset -c` takes them: `0-2,5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Which CPUs the load generator runs on and which the servers get, and
/// what each side was seen to run on (`results.json`'s `machine.cpu_split`).
#[derive(Debug, Clone, Serialize)]
pub struct CpuSplit {
    /// The load generator's CPUs, as asked for.
    pub generator: CpuList,
    /// The servers' CPUs: the rest of the suite's own.
    pub servers: CpuList,
    /// What the kernel says (`Cpus_allowed_list` in /proc) the load
    /// generator's thread and a started server run on, once pinned.
    pub seen: Option<Seen>,
}

/// CPUs as /proc reported them.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub generator: String,
    pub server: String,
}

impl CpuSplit {
    /// The split that gives the generator `generator` and the servers every
    /// other CPU this process may run on.
    pub fn new(generator: CpuList) -> Result<CpuSplit, SuiteError> {
        let allowed = allowed_cpus(Pid::from_raw(0))?;
        CpuSplit::within(&allowed, generator)
    }

    /// The split of `allowed` CPUs that gives the generator `generator`.
    fn within(allowed: &CpuList, generator: CpuList) -> Result<CpuSplit, SuiteError> {
        if generator.0.is_empty() {
            return Err(SuiteError::Invalid("--client-cpus names no CPU".to_owned()));
        }
        if let Some(cpu) = generator.0.iter().find(|cpu| !allowed.0.contains(cpu)) {
            return Err(SuiteError::Invalid(format!(
                "--client-cpus: CPU {cpu} is not among the CPUs this process may run on ({allowed})"
            )));
        }
        let servers: Vec<usize> = allowed
            .0
            .iter()
            .copied()
            .filter(|cpu| !generator.0.contains(cpu))
            .collect();
        if servers.is_empty() {
            return Err(SuiteError::Invalid(format!(
                "--client-cpus {generator} leaves no CPU for the servers (this process may run on {allowed})"
            )));
        }
        Ok(CpuSplit {
            generator,
            servers: CpuList(servers),
            seen: None,
        })
    }

    /// Pins the calling thread, and so every thread and process it starts
    /// from now on, to the generator's CPUs, until the guard is dropped.
    pub fn pin_generator(&self) -> Result<Pinned, SuiteError> {
        let pin_error = |err| {
            SuiteError::Setup(format!(
                "cannot pin the load generator to CPUs {}: {err}",
                self.generator
            ))
        };
        let before = sched_getaffinity(Pid::from_raw(0)).map_err(pin_error)?;
        sched_setaffinity(Pid::from_raw(0), &self.generator.set()?).map_err(pin_error)?;
        Ok(Pinned { before })
    }

    /// The servers' CPUs, for `pin`.
    pub fn server_set(&self) -> Result<CpuSet, SuiteError> {
        self.servers.set()
    }
}

/// The `Cpus_allowed_list` of a /proc `status` file: `self`,
/// `thread-self` or a process id.
pub fn seen(of: &str) -> String {
    std::fs::read_to_string(format!("/proc/{of}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(|list| list.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The calling thread pinned by [`CpuSplit::pin_generator`]: dropped, it
/// runs where it ran before, so that the suite leaves its caller as it
/// found it.
#[derive(Debug)]
pub struct Pinned {
    before: CpuSet,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Best effort: a thread that keeps the generator's CPUs still runs.
        let _ = sched_setaffinity(Pid::from_raw(0), &self.before);
    }
}

/// Makes `command`'s process start on `cpus` alone.
pub fn pin(command: &mut Command, cpus: CpuSet) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes one system call
    // (sched_setaffinity) on a set copied before the fork, and allocates
    // nothing.
    unsafe {
        command.pre_exec(move || {
            sched_setaffinity(Pid::from_raw(0), &cpus).map_err(std::io::Error::from)
        });
    }
}

/// The CPUs the thread or process `pid` may run on (0: the calling thread).
pub fn allowed_cpus(pid: Pid) -> Result<CpuList, SuiteError> {
    let set = sched_getaffinity(pid).map_err(|err| {
        SuiteError::Setup(format!(
            "cannot read the CPUs process {pid} may run on: {err}"
        ))
    })?;
    Ok(CpuList(
        (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> CpuList {
        text.parse().unwrap()
    }

    #[test]
    fn a_list_reads_single_cpus_and_ranges_as_taskset_writes_them() {
        assert_eq!(list("0").cpus(), [0]);
        assert_eq!(list("0-3").cpus(), [0, 1, 2, 3]);
        assert_eq!(list("5,0-1,1").cpus(), [0, 1, 5]);
        assert_eq!(list("5,0-1,1,2").to_string(), "0-2,5");
        assert_eq!(list("3").to_string(), "3");
    }

    #[test]
    fn a_list_that_is_not_one_says_why() {
        for (text, why) in [
            ("", "is not a CPU number"),
            ("0,,1", "is not a CPU number"),
            ("a", "is not a CPU number"),
            ("-1", "is not a CPU number"),
            ("3-1", "runs backwards"),
            ("0-99999", "past the"),
        ] {
            let err = text.parse::<CpuList>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_servers_get_every_allowed_cpu_the_generator_does_not() {
        let split = CpuSplit::within(&list("0-3"), list("0")).unwrap();
        assert_eq!(split.servers.cpus(), [1, 2, 3]);
        let split = CpuSplit::within(&list("2,4,6"), list("4")).unwrap();
        assert_eq!(split.servers.cpus(), [2, 6]);
    }

    #[test]
    fn a_split_must_leave_the_servers_a_cpu_and_stay_within_the_allowed() {
        let err = CpuSplit::within(&list("0-1"), list("0-1")).unwrap_err();
        assert!(err.to_string().contains("leaves no CPU"), "{err}");
        let err = CpuSplit::within(&list("0-1"), list("2")).unwrap_err();
        assert!(err.to_string().contains("CPU 2 is not among"), "{err}");
    }

    #[test]
    fn a_pinned_child_runs_on_the_cpus_it_was_given() {
        let allowed = allowed_cpus(Pid::from_raw(0)).unwrap();
        let last = *allowed.cpus().last().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        pin(&mut command, list(&last.to_string()).set().unwrap());
        let output = command.output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            said.split_whitespace().nth(1),
            Some(last.to_string().as_str()),
            "{said}"
        );
        assert_eq!(
            seen("self"),
            allowed.to_string(),
            "the parent stays as it was"
        );
    }

    #[test]
    fn the_generator_is_pinned_until_the_guard_goes() {
        let allowed = allowed_cpus(Pid::from_raw(0)).unwrap();
        let first = allowed.cpus()[0];
        // Whatever the machine's CPUs, and on a thread of its own, so that
        // no other test's thread is pinned.
        let split = CpuSplit {
            generator: list(&first.to_string()),
            servers: allowed.clone(),
            seen: None,
        };
        std::thread::spawn(move || {
            let pinned = split.pin_generator().unwrap();
            assert_eq!(seen("thread-self"), first.to_string());
            drop(pinned);
            assert_eq!(seen("thread-self"), allowed.to_string());
        })
        .join()
        .unwrap();
    }
}
