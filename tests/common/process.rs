//! What a test can see of a server process from outside, through /proc:
//! its CPU time, its threads' CPU time, resident memory and open
//! descriptors.

use std::time::Duration;

/// CPU time (user + system) the process has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The descriptor numbers the process has open.
pub fn open_descriptors(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Resident memory of the process, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

/// Time the process's threads named `name` (`tandem-accept`,
/// `tandem-worker`, ...) have spent running on a CPU, in nanoseconds as
/// the scheduler counts it (`/proc/<pid>/task/<tid>/schedstat`); none yet
/// counts as zero, as a new thread names itself once it first runs. Unlike
/// a runtime's busy time, which is wall time unparked, it does not grow
/// while a thread waits for a core on a loaded machine.
pub fn thread_cpu_time(pid: u32, name: &str) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/task: {err}"));
    let mut nanos = 0;
    for task in tasks.flatten().map(|entry| entry.path()) {
        let named =
            std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim_end() == name);
        // A thread that ended meanwhile has no schedstat any more.
        let Some(schedstat) = named
            .then(|| std::fs::read_to_string(task.join("schedstat")).ok())
            .flatten()
        else {
            continue;
        };
        // On-CPU time, waiting time, timeslices.
        nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("unreadable schedstat: {schedstat:?}"));
    }
    Duration::from_nanos(nanos)
}
