//! `tandem suite`, cut down to short runs of a few sections (churn, admin,
//! TLS, UDP and offload): what it records from the tandem servers' own
//! metrics, its measurement of what the admin endpoint costs, the light
//! and heavy figures of the offload variants, where its results go, how it
//! splits the CPUs between the load generator and the servers, and how the
//! peers section fails without its workspace. The peers themselves are
//! never built here.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::Proc;

/// How long the small suite run may take before it counts as a hang.
const SUITE_PATIENCE: Duration = Duration::from_secs(300);
use serde_json::Value;

/// One small suite run, made once and read by the tests below: its
/// results.json and report.md. It runs as an ad-hoc run does, in a folder
/// of its own with no `--out`, and its results must land in
/// `target/suite/` there.
fn small_suite() -> &'static (Value, String) {
    static RUN: OnceLock<(Value, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let cwd = tempfile::tempdir().unwrap();
        // About 20 samples of under a second each, one after another.
        let finished = quick_suite(
            Some(cwd.path()),
            &[
                "--only", "churn", "--only", "admin", "--only", "tls,udp", "--name", "small",
            ],
        );
        let folder = cwd.path().join("target").join("suite").join("small");
        assert_eq!(
            finished.stdout.trim(),
            format!("results in {}", Path::new("target/suite/small").display())
        );
        results_in(&folder)
    })
}

/// Runs `tandem suite --quick --runs 1 --duration 300ms` with `args`, from
/// `cwd` if given, to its end, which must be a success. A run is a series
/// of samples of under a second each, one after another: on a loaded
/// machine that takes far longer than one step of a test, so its limit,
/// `SUITE_PATIENCE`, only tells a hang from a slow run.
fn quick_suite(cwd: Option<&Path>, args: &[&str]) -> common::Finished {
    let mut command = common::tandem();
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command
        .args(["suite", "--quick", "--runs", "1", "--duration", "300ms"])
        .args(args);
    let finished = Proc::spawn(command).finish_within(SUITE_PATIENCE);
    assert!(finished.status.success(), "{}", finished.stderr);
    finished
}

/// The results.json and report.md a suite run wrote to `folder`.
fn results_in(folder: &Path) -> (Value, String) {
    let results = std::fs::read_to_string(folder.join("results.json")).unwrap();
    let report = std::fs::read_to_string(folder.join("report.md")).unwrap();
    (serde_json::from_str(&results).unwrap(), report)
}

/// The first CPU this process may run on.
fn first_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list: tandem_bench::suite::CpuList = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    list.cpus()[0]
}

/// A smaller run with the load generator on the first CPU and the servers
/// on the others (`--client-cpus`): its results.json and report.md.
fn split_suite() -> &'static (Value, String) {
    static RUN: OnceLock<(Value, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        quick_suite(
            None,
            &[
                "--only",
                "churn",
                "--out",
                out.path().to_str().unwrap(),
                "--name",
                "split",
                "--client-cpus",
                &first_cpu().to_string(),
            ],
        );
        results_in(&out.path().join("split"))
    })
}

fn cells<'a>(results: &'a Value, section: &str) -> Vec<&'a Value> {
    results["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cell| cell["section"] == section)
        .collect()
}

#[test]
fn every_sample_against_a_tandem_server_records_the_servers_own_figures() {
    let (results, report) = small_suite();
    let churn = cells(results, "churn");
    assert_eq!(churn.len(), 1, "{results}");
    for samples in churn[0]["servers"].as_array().unwrap() {
        let name = samples["server"].as_str().unwrap();
        for sample in samples["samples"].as_array().unwrap() {
            let server = &sample["report"]["server"];
            if name == "epoll" {
                assert!(server.is_null(), "the reference has no metrics: {sample}");
                continue;
            }
            // Churn opens a connection per request: the server saw each.
            let accepted = server["run"]["connections_accepted"].as_u64().unwrap();
            let requests = sample["report"]["messages"].as_u64().unwrap();
            assert!(accepted >= requests, "{name}: {accepted} < {requests}");
            assert!(
                server["window"]["busy_ratio"].as_object().unwrap().len() >= 2,
                "{name}: {server}"
            );
        }
    }
    assert!(
        report.contains("## Server side: what the tandem servers' metrics say"),
        "{report}"
    );
}

#[test]
fn with_client_cpus_the_generator_and_the_servers_run_on_cpus_of_their_own() {
    let (results, report) = split_suite();
    let split = &results["machine"]["cpu_split"];
    let generator = first_cpu().to_string();
    assert_eq!(split["generator"], generator.as_str(), "{split}");
    let servers = split["servers"].as_str().unwrap();
    assert!(!servers.is_empty(), "{split}");
    // What the kernel reported for the pinned load generator's thread and
    // for a started server: each on its own CPUs alone.
    assert_eq!(split["seen"]["generator"], generator.as_str(), "{split}");
    assert_eq!(split["seen"]["server"], servers, "{split}");
    assert!(
        report.contains(&format!(
            "on one thread on CPU {generator} of the same machine, and every server on CPU {servers}"
        )),
        "{report}"
    );
}

#[test]
fn without_client_cpus_the_generator_shares_the_cores() {
    let (results, report) = small_suite();
    assert!(results["machine"]["cpu_split"].is_null(), "{results}");
    assert!(
        report.contains("on one thread on the same machine, sharing its cores with the server"),
        "{report}"
    );
}

#[test]
fn the_admin_section_compares_split_with_the_endpoint_off_and_on_while_scraped() {
    let (results, report) = small_suite();
    let admin = cells(results, "admin");
    assert_eq!(admin.len(), 2, "a small and a large message: {results}");
    for cell in admin {
        let servers = cell["servers"].as_array().unwrap();
        let names: Vec<&str> = servers
            .iter()
            .map(|s| s["server"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["split (admin off)", "split (admin on)"]);
        let off = &servers[0]["samples"][0];
        let on = &servers[1]["samples"][0];
        assert!(off["scrapes"].is_null(), "{off}");
        // Scraped at once and then every second.
        assert!(on["scrapes"].as_u64().unwrap() >= 1, "{on}");
        assert_eq!(cell["ratio"]["of"], "on / off");
        let ratio = cell["ratio"]["value"].as_f64().unwrap();
        let medians =
            servers[1]["median"].as_f64().unwrap() / servers[0]["median"].as_f64().unwrap();
        assert!((ratio - medians).abs() < 1e-9, "{ratio} vs {medians}");
    }
    assert!(report.contains("| on / off |"), "{report}");
}

/// The cells of a transport section: their servers must be the layouts
/// over `tag` and then `baseline`, every sample's load spoken over the
/// transport its server serves, without an error, and the ratio the split
/// pair's.
fn check_transport_section(section: &str, tag: &str, transport: &str, baseline: &str) {
    let (results, report) = small_suite();
    let cells = cells(results, section);
    assert!(!cells.is_empty(), "no {section} cells: {results}");
    for cell in cells {
        let servers = cell["servers"].as_array().unwrap();
        let names: Vec<&str> = servers
            .iter()
            .map(|s| s["server"].as_str().unwrap())
            .collect();
        let expected = [
            format!("single ({tag})"),
            format!("split ({tag})"),
            format!("sharded ({tag})"),
            format!("split ({baseline})"),
        ];
        assert_eq!(names, expected, "{cell}");
        for (samples, speaks) in servers.iter().zip([transport, transport, transport, "tcp"]) {
            for sample in samples["samples"].as_array().unwrap() {
                let report = &sample["report"];
                assert_eq!(report["transport"], speaks, "{report}");
                assert_eq!(report["errors"], 0, "{report}");
                assert!(sample["value"].as_f64().unwrap() > 0.0, "{sample}");
                if speaks == "udp" {
                    assert_eq!(report["lost"], 0, "{report}");
                }
            }
        }
        let ratio = cell["ratio"]["value"].as_f64().unwrap();
        let medians =
            servers[1]["median"].as_f64().unwrap() / servers[3]["median"].as_f64().unwrap();
        assert!((ratio - medians).abs() < 1e-9, "{ratio} vs {medians}");
    }
    let of = if section == "tls" {
        "TLS / plain"
    } else {
        "UDP / TCP"
    };
    assert!(report.contains(&format!("| {of} |")), "{report}");
}

#[test]
fn the_tls_section_compares_the_layouts_over_tls_with_split_over_plain_tcp() {
    check_transport_section("tls", "TLS", "tls", "plain");
    let (results, _) = small_suite();
    let churn = cells(results, "tls")
        .into_iter()
        .find(|cell| cell["metric"] == "connects/s");
    assert!(churn.is_some(), "no TLS churn cell: {results}");
}

#[test]
fn the_udp_section_compares_the_layouts_echoing_datagrams_with_split_over_tcp() {
    check_transport_section("udp", "UDP", "udp", "TCP");
    let (_, report) = small_suite();
    assert!(
        report.contains("Datagrams lost over the section: 0."),
        "{report}"
    );
}

#[test]
fn a_run_never_overwrites_results_it_was_told_to_write_where_others_are() {
    let out = tempfile::tempdir().unwrap();
    let taken = out.path().join("full-2026-11-24");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("report.md"), "the published run").unwrap();
    let out_arg = out.path().to_str().unwrap();
    // Refused before a server starts: a full run would otherwise measure
    // for many minutes and then lose its results, or the published ones.
    // (Any program stands in for the epoll reference, which never starts.)
    let finished = Proc::run(
        &[
            "suite",
            "--out",
            out_arg,
            "--name",
            "full-2026-11-24",
            "--reference",
            env!("CARGO_BIN_EXE_tandem"),
        ],
        &[],
    );
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("already holds results"),
        "{}",
        finished.stderr
    );
    assert_eq!(
        std::fs::read_to_string(taken.join("report.md")).unwrap(),
        "the published run"
    );
}

#[test]
fn the_peers_section_without_its_workspace_fails_before_measuring_and_leaves_no_folder() {
    let out = tempfile::tempdir().unwrap();
    let out_arg = out.path().to_str().unwrap();
    // The peers are never built by the tests: with no workspace where
    // --peers points, the suite stops before cargo runs. (Any program
    // stands in for the epoll reference, which never starts.)
    let finished = Proc::run(
        &[
            "suite",
            "--only",
            "peers",
            "--out",
            out_arg,
            "--peers",
            "/nonexistent/bench/peers",
            "--reference",
            env!("CARGO_BIN_EXE_tandem"),
        ],
        &[],
    );
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("cannot build the peer servers of /nonexistent/bench/peers"),
        "{}",
        finished.stderr
    );
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The offload section's variants, in the order the suite runs them.
const OFFLOAD_VARIANTS: [&str; 4] = ["inline", "spawn-blocking", "compute-1", "compute-2"];

#[test]
fn the_offload_section_reports_light_and_heavy_figures_apart_for_each_variant_with_a_plot() {
    let out = tempfile::tempdir().unwrap();
    // The section starts only tandem servers: it runs without the epoll
    // reference.
    quick_suite(
        None,
        &[
            "--only",
            "offload",
            "--out",
            out.path().to_str().unwrap(),
            "--name",
            "offload",
            "--reference",
            "/nonexistent/epoll_echo",
        ],
    );
    let folder = out.path().join("offload");
    let (results, report) = results_in(&folder);

    let variants = results["offload"]["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|variant| variant["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, OFFLOAD_VARIANTS, "{results}");
    for variant in variants {
        for figure in [
            "light_p50_ms",
            "light_p99_ms",
            "light_p999_ms",
            "light_msgs_per_sec",
            "heavy_mib_per_sec",
            "server_cpu_per_sec",
        ] {
            assert!(
                variant["figures"][figure]["median"].is_f64(),
                "{figure}: {variant}"
            );
        }
        assert_eq!(variant["errors"], 0, "{variant}");
        let sample = &variant["samples"][0];
        assert_eq!(sample["light"]["mode"], "open", "{sample}");
        assert_eq!(sample["heavy"]["mode"], "closed", "{sample}");
        assert_eq!(sample["heavy"]["message_size"], 65536, "{sample}");
    }
    assert_eq!(variants[0]["light_p99_vs_inline"], 1.0, "{results}");

    let section = report
        .split("## Offload")
        .nth(1)
        .unwrap_or_else(|| panic!("no offload section: {report}"));
    let header = section
        .lines()
        .find(|line| line.starts_with("| variant |"))
        .unwrap();
    for name in OFFLOAD_VARIANTS {
        let row = section
            .lines()
            .find(|line| line.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}: {section}"));
        assert_eq!(
            row.matches('|').count(),
            header.matches('|').count(),
            "{row}"
        );
    }
    assert!(report.contains("![offload](offload.svg)"), "{report}");
    for plot in ["offload.svg", "offload.png"] {
        assert!(folder.join(plot).is_file(), "no {plot} in {folder:?}");
    }
}

#[test]
fn a_section_that_measures_the_epoll_reference_fails_at_once_without_it() {
    let out = tempfile::tempdir().unwrap();
    let finished = Proc::run(
        &[
            "suite",
            "--quick",
            "--only",
            "memory",
            "--out",
            out.path().to_str().unwrap(),
            "--reference",
            "/nonexistent/epoll_echo",
        ],
        &[],
    );
    assert!(!finished.status.success(), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("no epoll reference server at /nonexistent/epoll_echo"),
        "{}",
        finished.stderr
    );
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
