//! Specifies the command line of `tandem serve` as a user meets it: exit
//! statuses and messages for bad configurations and run-time failures, the
//! stdout/stderr contract, the precedence of flags > environment > file >
//! defaults, IPv6 listening and the help text. Every test runs the real binary
//! over real loopback sockets.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{ConfigFile, PATIENCE, Proc, TestServer, round_trip, startup_fields, tandem};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Every flag of `tandem serve`, `--config` included, with what its help
/// gives as its default: taken from the options' one declaration, as the
/// binary builds them.
fn serve_flags() -> Vec<(String, Option<String>)> {
    let command = tandem_cli::config::serve_command();
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            Some((format!("--{long}"), tandem_cli::config::stated_default(arg)))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Stops `server` and asserts it shut down cleanly.
fn stop_cleanly(mut server: TestServer) {
    let status = server.stop();
    assert!(
        status.success(),
        "tandem exited with {status}; stderr:\n{}",
        server.stderr()
    );
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}

/// Asserts that the server echoes `abc` as `abc\n` (`append_newline` on).
fn assert_appends_newline(server: &TestServer) {
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");
    let mut newline = [0u8; 1];
    stream.read_exact(&mut newline).expect("read appended byte");
    assert_eq!(&newline, b"\n", "expected `abc\\n` back");
}

/// Asserts that the server echoes exactly what it gets (`append_newline` off):
/// had it appended a newline to the first chunk, the second would come back
/// shifted by one byte.
fn assert_echoes_verbatim(server: &TestServer) {
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");
    assert_eq!(
        round_trip(&mut stream, b"def"),
        b"def",
        "a newline was appended to the first echo"
    );
}

/// Binds `[::1]:0` from the test process to learn whether the machine has an
/// IPv6 loopback at all.
fn ipv6_loopback_available() -> bool {
    match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        // EADDRNOTAVAIL: no ::1 configured; EAFNOSUPPORT: no IPv6 at all.
        Err(err)
            if err.kind() == ErrorKind::AddrNotAvailable
                || err.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            false
        }
        Err(err) => panic!("cannot probe for an IPv6 loopback: {err}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Invalid configurations exit 2 and say what is wrong
// ---------------------------------------------------------------------------

/// One invalid configuration and what its message must mention.
struct Invalid {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Written to a temporary file passed with `--config`.
    file: Option<&'static str>,
    /// Substrings of stderr; `{path}` stands for the config file's path.
    expect: &'static [&'static str],
}

/// The fields an entry of [`INVALID`] leaves out.
const PLAIN: Invalid = Invalid {
    name: "",
    args: &[],
    env: &[],
    file: None,
    expect: &[],
};

const INVALID: &[Invalid] = &[
    Invalid {
        name: "zero handoff capacity",
        args: &["--handoff-capacity", "0"],
        expect: &["--handoff-capacity", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "zero workers",
        args: &["--workers", "0"],
        expect: &["--workers", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "zero buffer size",
        args: &["--buffer-size", "0"],
        expect: &["--buffer-size", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "a buffer budget below a mebibyte",
        args: &["--buffer-memory", "65536"],
        expect: &[
            "--buffer-memory",
            "must be between 1048576 and",
            "got 65536",
        ],
        ..PLAIN
    },
    Invalid {
        name: "a shutdown grace beyond a year",
        args: &["--shutdown-grace", "2y"],
        expect: &["--shutdown-grace", "must be at most"],
        ..PLAIN
    },
    Invalid {
        name: "zero max connections",
        args: &["--max-connections", "0"],
        expect: &["--max-connections", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "zero backlog",
        args: &["--backlog", "0"],
        expect: &["--backlog", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "zero acceptor threads",
        args: &["--acceptor-threads", "0"],
        expect: &["--acceptor-threads", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "duration that is not one",
        args: &["--idle-timeout", "soon"],
        expect: &["--idle-timeout", "'soon'"],
        ..PLAIN
    },
    Invalid {
        name: "unknown layout",
        args: &["--layout", "diagonal"],
        expect: &["--layout", "'diagonal'", "split", "single", "sharded"],
        ..PLAIN
    },
    Invalid {
        name: "listen address that is not one",
        args: &["--listen", "not-an-address"],
        expect: &["--listen", "'not-an-address'"],
        ..PLAIN
    },
    Invalid {
        name: "unknown log format",
        args: &["--log-format", "xml"],
        expect: &["--log-format", "'xml'", "text", "json"],
        ..PLAIN
    },
    Invalid {
        name: "listen port beyond 65535",
        args: &["--listen", "127.0.0.1:70000"],
        expect: &["--listen", "'127.0.0.1:70000'"],
        ..PLAIN
    },
    Invalid {
        name: "IPv6 listen address without brackets",
        args: &["--listen", "::1:8000"],
        expect: &["--listen", "'::1:8000'"],
        ..PLAIN
    },
    Invalid {
        name: "listen address without a port",
        args: &["--listen", "127.0.0.1"],
        expect: &["--listen", "'127.0.0.1'"],
        ..PLAIN
    },
    Invalid {
        name: "negative worker count",
        args: &["--workers=-2"],
        expect: &["--workers", "'-2'"],
        ..PLAIN
    },
    Invalid {
        name: "absurd worker count",
        args: &["--workers", "100000"],
        expect: &["--workers", "must be between 1 and 1024", "got 100000"],
        ..PLAIN
    },
    Invalid {
        name: "zero per-client connections",
        args: &["--max-connections-per-ip", "0"],
        expect: &["--max-connections-per-ip", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "minimum rate that is not a number",
        args: &["--min-rate", "fast"],
        expect: &["--min-rate", "'fast'"],
        ..PLAIN
    },
    Invalid {
        name: "duration without a unit",
        args: &["--shutdown-timeout", "30"],
        expect: &["--shutdown-timeout", "'30'"],
        ..PLAIN
    },
    Invalid {
        name: "duration beyond a year",
        args: &["--idle-timeout", "2y"],
        expect: &["--idle-timeout", "must be at most"],
        ..PLAIN
    },
    Invalid {
        name: "buffer size beyond 16 MiB",
        args: &["--buffer-size", "1073741824"],
        expect: &["--buffer-size", "must be between 1 and", "got 1073741824"],
        ..PLAIN
    },
    Invalid {
        name: "zero PROXY header timeout",
        args: &["--proxy-protocol", "--proxy-protocol-timeout", "0s"],
        expect: &["--proxy-protocol-timeout", "must be more than 0"],
        ..PLAIN
    },
    Invalid {
        name: "a trusted range that is no range",
        args: &[
            "--proxy-protocol",
            "--proxy-protocol-from",
            "10.0.0.0/8,10.0.0.0/33",
        ],
        expect: &[
            "--proxy-protocol-from",
            "\"10.0.0.0/33\" is not an IP address or a CIDR range",
        ],
        ..PLAIN
    },
    Invalid {
        name: "a trusted range that is a host name, from the environment",
        env: &[
            ("TANDEM_PROXY_PROTOCOL", "true"),
            ("TANDEM_PROXY_PROTOCOL_FROM", "balancer.internal"),
        ],
        // clap names the flag for a value it cannot parse, from wherever.
        expect: &[
            "--proxy-protocol-from",
            "\"balancer.internal\" is not an IP address",
        ],
        ..PLAIN
    },
    Invalid {
        name: "a trusted range list in the file with a bad item",
        file: Some("proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"ten\"]\n"),
        expect: &[
            "{path}",
            "proxy_protocol_from",
            "\"ten\" is not an IP address",
        ],
        ..PLAIN
    },
    Invalid {
        name: "trusted balancers without the PROXY protocol",
        args: &["--proxy-protocol-from", "10.0.0.0/8"],
        expect: &[
            "--proxy-protocol-from",
            "needs --proxy-protocol as well",
            "got 10.0.0.0/8",
        ],
        ..PLAIN
    },
    Invalid {
        name: "zero UDP rate limit",
        args: &["--udp", "--udp-rate-limit", "0"],
        expect: &["--udp-rate-limit", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "missing config file",
        args: &["--config", "/nonexistent/tandem.toml"],
        expect: &[
            "cannot read config file /nonexistent/tandem.toml",
            "No such file",
        ],
        ..PLAIN
    },
    Invalid {
        name: "zero workers from the environment",
        env: &[("TANDEM_WORKERS", "0")],
        expect: &["TANDEM_WORKERS", "must be between 1 and", "got 0"],
        ..PLAIN
    },
    Invalid {
        name: "non-boolean append-newline from the environment",
        env: &[("TANDEM_APPEND_NEWLINE", "maybe")],
        expect: &["--append-newline", "'maybe'", "TANDEM_APPEND_NEWLINE"],
        ..PLAIN
    },
    Invalid {
        name: "a count that is no number, from the environment",
        env: &[("TANDEM_WORKERS", "abc")],
        // clap names the flag; the variable it came from is added.
        expect: &[
            "--workers",
            "'abc'",
            "the value comes from the environment variable TANDEM_WORKERS",
        ],
        ..PLAIN
    },
    Invalid {
        name: "\"0\" as the host to listen on",
        args: &["--listen", "0:0"],
        expect: &["--listen", "'0:0'", "0.0.0.0:0"],
        ..PLAIN
    },
    Invalid {
        name: "a shorthand IPv4 address to listen on",
        args: &["--listen", "127.1:0"],
        expect: &["--listen", "'127.1:0'", "127.0.0.1:0"],
        ..PLAIN
    },
    Invalid {
        name: "an IPv4-mapped IPv6 address to listen on",
        args: &["--listen", "[::ffff:127.0.0.1]:0"],
        expect: &["--listen", "IPv4-mapped", "write 127.0.0.1:0"],
        ..PLAIN
    },
    Invalid {
        name: "an address of no interface of this host to listen on",
        // TEST-NET-1 (RFC 5737): never a local address.
        args: &["--listen", "192.0.2.1:0"],
        expect: &["--listen", "cannot be listened on here", "got 192.0.2.1:0"],
        ..PLAIN
    },
    Invalid {
        name: "an IPv4-mapped admin address",
        args: &["--admin-listen", "[::ffff:127.0.0.1]:0"],
        expect: &["--admin-listen", "cannot be listened on here"],
        ..PLAIN
    },
    Invalid {
        name: "an idle timeout under 100 ms",
        args: &["--idle-timeout", "1ns"],
        expect: &[
            "--idle-timeout",
            "must be 0 (off) or at least 100ms",
            "got 1ns",
        ],
        ..PLAIN
    },
    Invalid {
        name: "a key dotted deeper than the TOML reader goes",
        file: Some(DEEP_KEY),
        expect: &["{path}", "line 2", "`a.a.a.a", "101 levels deep"],
        ..PLAIN
    },
    Invalid {
        name: "a NUL byte in the file",
        file: Some("workers = 2\0\n"),
        // Escaped as Rust writes it, never raw.
        expect: &["{path}", "workers = 2\\0"],
        ..PLAIN
    },
    Invalid {
        name: "unknown key in the file",
        file: Some("handoff_capacty = 7\n"),
        expect: &["{path}", "unknown field", "handoff_capacty"],
        ..PLAIN
    },
    Invalid {
        name: "malformed TOML",
        file: Some("workers = \n"),
        expect: &["{path}", "TOML parse error", "line 1"],
        ..PLAIN
    },
    Invalid {
        name: "string where the file needs a number",
        file: Some("workers = \"two\"\n"),
        expect: &["{path}", "workers", "invalid type", "\"two\""],
        ..PLAIN
    },
    Invalid {
        name: "bad duration in the file",
        file: Some("idle_timeout = \"soon\"\n"),
        expect: &["{path}", "idle_timeout", "invalid duration \"soon\""],
        ..PLAIN
    },
    Invalid {
        name: "unknown layout in the file",
        file: Some("layout = \"diagonal\"\n"),
        expect: &["{path}", "layout", "diagonal"],
        ..PLAIN
    },
    Invalid {
        name: "listen address in the file that is not one",
        file: Some("listen = \"localhost\"\n"),
        expect: &["{path}", "listen", "is not an address and port"],
        ..PLAIN
    },
    Invalid {
        name: "a key given twice in the file",
        file: Some("workers = 2\nworkers = 3\n"),
        expect: &["{path}", "duplicate key"],
        ..PLAIN
    },
    Invalid {
        name: "negative number in the file",
        file: Some("max_connections = -5\n"),
        expect: &["{path}", "max_connections", "-5"],
        ..PLAIN
    },
    Invalid {
        name: "a table where the file needs a value",
        file: Some("[listen]\nport = 1\n"),
        expect: &["{path}", "listen", "invalid type"],
        ..PLAIN
    },
    Invalid {
        name: "out-of-range value in the file",
        file: Some("buffer_size = 0\n"),
        expect: &["buffer_size", "must be between 1 and", "got 0"],
        ..PLAIN
    },
];

/// A key of 101 dotted parts, on the file's second line.
const DEEP_KEY: &str = "workers = 2\na.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.\
a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.\
a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.\
a.a.a.a.a = 1\n";

#[test]
fn configuration_and_pem_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO with no writer: opened for reading, it would wait for ever.
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    // Past the 1 MiB bound, though valid TOML (and PEM) throughout.
    let big = dir.path().join("big");
    std::fs::write(&big, "# a comment line of TOML\n".repeat(50_000)).unwrap();
    let (fifo, big) = (fifo.to_str().unwrap(), big.to_str().unwrap());
    let cases: [(&[&str], &str, &str); 4] = [
        (&["--config", fifo], fifo, "not a regular file"),
        (&["--config", big], big, "larger than 1024 KiB"),
        (
            &["--tls-cert", fifo, "--tls-key", fifo],
            fifo,
            "not a regular file",
        ),
        (
            &["--tls-cert", big, "--tls-key", big],
            big,
            "larger than 1024 KiB",
        ),
    ];
    for (args, path, rule) in cases {
        let mut command = tandem();
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        // The patience only tells a hang from a slow start.
        let out = Proc::spawn(command).finish_within(PATIENCE);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(path) && out.stderr.contains(rule),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn invalid_configurations_exit_2_naming_the_option_and_the_problem() {
    let mut failures = Vec::new();
    for case in INVALID {
        let file = case.file.map(ConfigFile::new);
        let mut args = vec!["serve"];
        if let Some(file) = &file {
            args.extend(["--config", file.path()]);
        }
        args.extend(case.args);
        // Should a case be accepted after all, it binds a free port instead of
        // 8000 and is caught by the exit-status check below.
        let mut env = vec![("TANDEM_LISTEN", "127.0.0.1:0")];
        env.extend(case.env);
        let out = Proc::run(&args, &env);

        let expect: Vec<String> = case
            .expect
            .iter()
            .map(|needle| match &file {
                Some(file) => needle.replace("{path}", file.path()),
                None => (*needle).to_owned(),
            })
            .collect();
        let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
        let problems = out.refusal_problems(&expect);
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({args:?}, env {:?}): {}\n  stderr: {}",
                case.name,
                case.env,
                problems.join("; "),
                out.stderr.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn missing_config_file_exits_2_naming_the_path_and_the_os_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.toml");
    let path = path.to_str().expect("UTF-8 temp path");

    let out = Proc::run(&["serve", "--listen", "127.0.0.1:0", "--config", path], &[]);

    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot read config file {path}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No such file or directory"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
}

#[test]
fn missing_config_file_named_by_tandem_config_exits_2_naming_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.toml");
    let path = path.to_str().expect("UTF-8 temp path");

    let out = Proc::run(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("TANDEM_CONFIG", path)],
    );

    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains(path), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// 2. Run-time failures exit 1 and say what failed and why
// ---------------------------------------------------------------------------

#[test]
fn listening_on_an_address_in_use_exits_1_naming_the_address_and_the_os_reason() {
    let first = TestServer::start(&[]);
    let addr = first.addr.to_string();

    let second = Proc::run(&["serve", "--listen", &addr], &[]);

    assert_eq!(second.status.code(), Some(1), "stderr: {}", second.stderr);
    assert!(
        second.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("Address already in use"),
        "{}",
        second.stderr
    );
    assert!(!second.stderr.contains("panicked"), "{}", second.stderr);
    assert!(
        !second.stdout.contains("listening on"),
        "stdout: {}",
        second.stdout
    );
    // The failed attempt leaves the first server untouched.
    let mut stream = first.connect();
    assert_eq!(round_trip(&mut stream, b"still here"), b"still here");
    drop(stream);
    stop_cleanly(first);
}

#[test]
fn address_in_use_message_states_the_os_reason_once() {
    let first = TestServer::start(&[]);
    let addr = first.addr.to_string();

    let second = Proc::run(&["serve", "--listen", &addr], &[]);

    let line = second
        .stderr
        .lines()
        .find(|line| line.contains("cannot listen on"))
        .unwrap_or_else(|| panic!("no `cannot listen on` line:\n{}", second.stderr));
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");
    stop_cleanly(first);
}

// ---------------------------------------------------------------------------
// 3. Output contract
// ---------------------------------------------------------------------------

#[test]
fn first_stdout_line_is_exactly_listening_on_the_bound_address() {
    let mut command = tandem();
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(command);

    let line = proc.first_line();

    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "first stdout line {line:?} is not `listening on <addr>\\n`; stderr:\n{}",
                proc.stderr()
            )
        });
    assert_eq!(line, format!("listening on {addr}\n"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(
        addr.port(),
        0,
        "printed the requested port, not the bound one"
    );
    // The printed port is the one actually serving.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to printed address");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(round_trip(&mut stream, b"ping"), b"ping");
    drop(stream);

    proc.signal(Signal::SIGTERM);
    let out = proc.finish();
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "more stdout after the first line: {:?}",
        out.stdout
    );
}

#[test]
fn json_log_format_writes_only_json_objects_to_stderr() {
    let server = TestServer::start(&["--log-format", "json"]);
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"hello"), b"hello");
    drop(stream);
    let mut server = server;
    let status = server.stop();
    assert!(
        status.success(),
        "exit {status}; stderr:\n{}",
        server.stderr()
    );
    server.wait_for_log("shutdown complete");

    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2,
        "expected start-up and shutdown lines:\n{stderr}"
    );
    for line in lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("stderr line is not JSON ({err}): {line:?}"));
        assert!(
            value.is_object(),
            "stderr line is not a JSON object: {line}"
        );
    }
}

#[test]
fn json_startup_line_states_the_effective_configuration() {
    let server = TestServer::start(&[
        "--log-format",
        "json",
        "--layout",
        "sharded",
        "--workers",
        "2",
        "--acceptor-threads",
        "1",
        "--handoff-capacity",
        "17",
        "--max-connections",
        "33",
        "--buffer-size",
        "512",
        "--backlog",
        "64",
        "--nodelay",
        "false",
        "--append-newline",
        "true",
        "--idle-timeout",
        "90s",
        "--shutdown-timeout",
        "5s",
    ]);

    let fields = startup_fields(&server);

    let expected = serde_json::json!({
        "listen": "127.0.0.1:0",
        "listening_on": server.addr.to_string(),
        "layout": "sharded",
        "workers": 2,
        "acceptor_threads": 1,
        "handoff_capacity": 17,
        "max_connections": 33,
        "buffer_size": 512,
        "backlog": 64,
        "nodelay": false,
        "append_newline": true,
        "idle_timeout": "1m 30s",
        "shutdown_timeout": "5s",
    });
    for (key, want) in expected.as_object().unwrap() {
        assert_eq!(fields.get(key), Some(want), "field `{key}` of {fields:?}");
    }
    stop_cleanly(server);
}

#[test]
fn json_startup_line_states_the_defaults_when_nothing_is_set() {
    let server = TestServer::start(&["--log-format", "json"]);

    let fields = startup_fields(&server);

    let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert_eq!(fields["layout"], "split");
    assert_eq!(fields["workers"], parallelism);
    assert_eq!(fields["acceptor_threads"], 1);
    assert_eq!(fields["handoff_capacity"], 4000);
    assert_eq!(fields["buffer_size"], 65_536);
    assert_eq!(fields["backlog"], 1024);
    assert_eq!(fields["nodelay"], true);
    assert_eq!(fields["append_newline"], false);
    assert_eq!(fields["idle_timeout"], "5m");
    assert_eq!(fields["shutdown_timeout"], "30s");
    stop_cleanly(server);
}

#[test]
fn json_startup_line_states_the_admin_endpoints_bound_address() {
    let server = TestServer::start_with_admin(&["--log-format", "json"]);
    let fields = startup_fields(&server);
    assert_eq!(fields["admin_listen"], "127.0.0.1:0", "as asked for");
    assert_eq!(
        fields["admin_listening_on"],
        server.admin_addr().to_string(),
        "not the port asked for (0), the one taken"
    );
    stop_cleanly(server);
}

#[test]
fn the_startup_line_states_listen_as_given_then_the_address_bound() {
    let server = TestServer::start(&["--log-format", "json"]);
    let fields = startup_fields(&server);
    assert_eq!(fields["listen"], "127.0.0.1:0");
    assert_eq!(fields["listen_resolved"], "127.0.0.1:0");
    assert_eq!(fields["listening_on"], server.addr.to_string());
    assert_ne!(server.addr.port(), 0);
    stop_cleanly(server);
}

#[test]
fn a_shutdown_timeout_of_a_year_written_1y_is_accepted() {
    let server = TestServer::start(&["--log-format", "json", "--shutdown-timeout", "1y"]);
    assert_eq!(startup_fields(&server)["shutdown_timeout"], "1year");
    stop_cleanly(server);
}

#[test]
fn an_idle_timeout_under_a_second_is_served_with_a_warning() {
    let server = TestServer::start(&["--idle-timeout", "300ms"]);
    let line = server.wait_for_line("--idle-timeout 300ms is under 1s");
    assert!(line.contains("WARN"), "{line}");
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");
    drop(stream);
    stop_cleanly(server);
}

#[test]
fn an_unknown_tandem_variable_is_warned_about_with_the_nearest_option() {
    // A misspelling, then what Kubernetes sets beside a service named
    // tandem, and a variable of `tandem bench`: only the first is named.
    let env = [
        ("TANDEM_WORKRS", "2"),
        ("TANDEM_SERVICE_HOST", "10.0.0.1"),
        ("TANDEM_SERVICE_PORT", "8000"),
        ("TANDEM_SERVICE_PORT_ECHO", "8000"),
        ("TANDEM_PORT", "tcp://10.0.0.1:8000"),
        ("TANDEM_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
        ("TANDEM_PORT_8000_TCP_PROTO", "tcp"),
        ("TANDEM_PORT_8000_TCP_PORT", "8000"),
        ("TANDEM_PORT_8000_TCP_ADDR", "10.0.0.1"),
        ("TANDEM_BENCH_CONNECTIONS", "5"),
    ];
    let server = TestServer::start_with_env(&env, &[]);
    let warning = server.wait_for_line("TANDEM_WORKRS");
    assert!(
        warning.contains("WARN")
            && warning.contains("is no option's variable and is ignored")
            && warning.contains("did you mean TANDEM_WORKERS (--workers)?"),
        "{warning}"
    );
    // Warned, not refused: the server serves.
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");
    drop(stream);
    server.wait_for_line("tandem serve starting");
    let stderr = server.stderr();
    for (name, _) in &env[1..] {
        assert!(!stderr.contains(&format!("{name} ")), "{name}: {stderr}");
    }
    stop_cleanly(server);
}

#[test]
fn the_listen_help_says_which_of_a_names_addresses_is_bound() {
    let help = Proc::run(&["serve", "--help"], &[]);
    let listen = help
        .stdout
        .split("--listen <ADDR>")
        .nth(1)
        .and_then(|rest| rest.split("[env: TANDEM_LISTEN").next())
        .unwrap_or_else(|| panic!("no --listen in:\n{}", help.stdout));
    let said = listen.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("of which the first address that can be bound is taken;"),
        "{said}"
    );
}

#[test]
fn the_help_lists_every_value_a_boolean_takes_and_each_is_taken() {
    let help = Proc::run(&["serve", "--help"], &[]);
    assert!(help.status.success(), "{}", help.stderr);
    let listed = "[possible values: true, false, yes, no, on, off, 1, 0]";
    assert_eq!(help.stdout.matches(listed).count(), 5, "{}", help.stdout);
    for value in [
        "true", "false", "yes", "no", "on", "off", "1", "0", "TRUE", "Off",
    ] {
        // Taken: the refusal that follows is the workers', not the flag's.
        let out = Proc::run(
            &["serve", "--nodelay", value, "--workers", "0"],
            &[("TANDEM_LISTEN", "127.0.0.1:0")],
        );
        assert_eq!(out.status.code(), Some(2), "{value}: {}", out.stderr);
        assert!(
            out.stderr.contains("invalid --workers"),
            "{value}: {}",
            out.stderr
        );
    }
    // What the list lacks is refused, and the refusal lists it again.
    let out = Proc::run(&["serve", "--nodelay", "maybe"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains(listed), "{}", out.stderr);
}

#[test]
fn a_host_name_to_listen_on_is_resolved_and_its_first_address_bound() {
    let mut command = tandem();
    command.args(["serve", "--listen", "localhost:0", "--log-format", "json"]);
    let server = TestServer::spawn(command);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let fields = startup_fields(&server);
    let resolved: Vec<SocketAddr> = fields["listen_resolved"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|addr| addr.parse().unwrap())
        .collect();
    assert!(
        resolved.iter().all(|addr| addr.ip().is_loopback()),
        "{resolved:?}"
    );
    // The first address the name resolved to is the one bound.
    assert_eq!(resolved[0].ip(), server.addr.ip(), "{resolved:?}");
    stop_cleanly(server);

    // One short try at the resolver: an unreachable name server must not
    // outlast the test's patience.
    let out = Proc::run(
        &["serve", "--listen", "no-such-host.invalid:8000"],
        &[("RES_OPTIONS", "timeout:1 attempts:1")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--listen") && out.stderr.contains("must resolve to an address"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_startup_line_states_every_option() {
    let server = TestServer::start(&["--log-format", "json"]);
    let fields = startup_fields(&server);
    // Each option is a field named by its key, but for those stated
    // together: the TLS files and timeout as `tls`, the UDP rate with
    // `udp`, the header timeout with `proxy_protocol`. `--config` and the
    // log format say how the line was made, not how the server runs.
    fn stated_with(key: &str) -> Option<&str> {
        match key {
            "tls_cert" | "tls_key" | "tls_handshake_timeout" => Some("tls"),
            "udp_rate_limit" => Some("udp"),
            "proxy_protocol_timeout" => Some("proxy_protocol"),
            "config" | "log_format" => None,
            key => Some(key),
        }
    }
    let missing: Vec<String> = serve_flags()
        .into_iter()
        .map(|(flag, _)| flag[2..].replace('-', "_"))
        .filter(|key| stated_with(key).is_some_and(|field| !fields.contains_key(field)))
        .collect();
    assert!(
        missing.is_empty(),
        "the start-up line lacks {missing:?}: {fields:?}"
    );
    stop_cleanly(server);
}

// ---------------------------------------------------------------------------
// 4. Precedence: flags > environment > file > defaults
// ---------------------------------------------------------------------------

/// Starts a JSON-logging server with `env` and `args`, checks that it
/// serves, stops it and returns the `workers` of its start-up line.
fn reported_workers(env: &[(&str, &str)], args: &[&str]) -> Value {
    let server = TestServer::start_with_env(env, &[&["--log-format", "json"], args].concat());
    let workers = startup_fields(&server)["workers"].clone();
    let mut stream = server.connect();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");
    drop(stream);
    stop_cleanly(server);
    workers
}

#[test]
fn workers_default_to_the_available_parallelism() {
    let parallelism = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    assert_eq!(reported_workers(&[], &[]), parallelism);
}

#[test]
fn workers_in_the_file_override_the_default() {
    let file = ConfigFile::new("workers = 3\n");

    assert_eq!(reported_workers(&[], &["--config", file.path()]), 3);
}

#[test]
fn tandem_workers_in_the_environment_overrides_the_file() {
    let file = ConfigFile::new("workers = 3\n");

    let workers = reported_workers(&[("TANDEM_WORKERS", "2")], &["--config", file.path()]);

    assert_eq!(workers, 2);
}

#[test]
fn workers_flag_overrides_the_environment_and_the_file() {
    let file = ConfigFile::new("workers = 3\n");

    let workers = reported_workers(
        &[("TANDEM_WORKERS", "2")],
        &["--config", file.path(), "--workers", "1"],
    );

    assert_eq!(workers, 1);
}

#[test]
fn layout_and_log_format_from_the_environment_override_the_file() {
    let file = ConfigFile::new("layout = \"sharded\"\nlog_format = \"text\"\n");

    let server = TestServer::start_with_env(
        &[("TANDEM_LAYOUT", "single"), ("TANDEM_LOG_FORMAT", "json")],
        &["--config", file.path()],
    );

    // The start-up line parses as JSON only if the env's log format won.
    let fields = startup_fields(&server);
    assert_eq!(fields["layout"], "single");
    stop_cleanly(server);
}

#[test]
fn append_newline_true_in_the_file_echoes_abc_as_abc_newline() {
    let file = ConfigFile::new("append_newline = true\n");

    let server = TestServer::start(&["--config", file.path()]);

    assert_appends_newline(&server);
    stop_cleanly(server);
}

#[test]
fn append_newline_false_in_the_environment_overrides_the_file() {
    let file = ConfigFile::new("append_newline = true\n");

    let server = TestServer::start_with_env(
        &[("TANDEM_APPEND_NEWLINE", "false")],
        &["--config", file.path()],
    );

    assert_echoes_verbatim(&server);
    stop_cleanly(server);
}

#[test]
fn append_newline_flag_without_a_value_turns_it_on() {
    let server = TestServer::start(&["--append-newline"]);

    assert_appends_newline(&server);
    stop_cleanly(server);
}

#[test]
fn append_newline_flag_set_to_false_overrides_the_environment_and_the_file() {
    let file = ConfigFile::new("append_newline = true\n");

    let server = TestServer::start_with_env(
        &[("TANDEM_APPEND_NEWLINE", "true")],
        &["--config", file.path(), "--append-newline", "false"],
    );

    assert_echoes_verbatim(&server);
    stop_cleanly(server);
}

#[test]
fn echo_is_verbatim_by_default() {
    let server = TestServer::start(&[]);

    assert_echoes_verbatim(&server);
    stop_cleanly(server);
}

#[test]
fn config_file_can_be_named_by_tandem_config() {
    let file = ConfigFile::new("append_newline = true\n");

    let server = TestServer::start_with_env(&[("TANDEM_CONFIG", file.path())], &[]);

    assert_appends_newline(&server);
    stop_cleanly(server);
}

#[test]
fn config_flag_wins_over_tandem_config() {
    let env_file = ConfigFile::new("append_newline = true\n");
    let flag_file = ConfigFile::new("append_newline = false\n");

    let server = TestServer::start_with_env(
        &[("TANDEM_CONFIG", env_file.path())],
        &["--config", flag_file.path()],
    );

    assert_echoes_verbatim(&server);
    stop_cleanly(server);
}

#[test]
fn human_idle_timeout_in_the_file_closes_a_silent_connection_after_it() {
    let file = ConfigFile::new("idle_timeout = \"250ms\"\n");
    let server = TestServer::start(&["--log-format", "json", "--config", file.path()]);
    assert_eq!(startup_fields(&server)["idle_timeout"], "250ms");
    let mut stream = server.connect();
    // Taken before the client sends: the server's idle clock starts at its
    // own last read or write, which comes after this however the two
    // processes are scheduled.
    let silent_since = Instant::now();
    assert_eq!(round_trip(&mut stream, b"abc"), b"abc");

    // The read times out after PATIENCE if the server never closes.
    let mut rest = [0u8; 16];
    let outcome = stream.read(&mut rest);

    match outcome {
        Ok(0) => {}
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the idle connection, got {other:?}"),
    }
    assert!(
        silent_since.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, well before the idle timeout",
        silent_since.elapsed()
    );
    stop_cleanly(server);
}

// ---------------------------------------------------------------------------
// 5. IPv6
// ---------------------------------------------------------------------------

#[test]
fn listens_and_echoes_on_the_ipv6_loopback() {
    if !ipv6_loopback_available() {
        eprintln!("skipping: this machine has no IPv6 loopback ([::1] cannot be bound)");
        return;
    }
    let mut command = tandem();
    command.args(["serve", "--listen", "[::1]:0"]);
    let mut proc = Proc::spawn(command);

    let line = proc.first_line();

    let port: u16 = line
        .strip_prefix("listening on [::1]:")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "first stdout line {line:?} is not `listening on [::1]:<port>`; stderr:\n{}",
                proc.stderr()
            )
        });
    assert_ne!(port, 0);
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut stream = std::net::TcpStream::connect(addr).expect("connect over IPv6");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(round_trip(&mut stream, b"over six"), b"over six");
    drop(stream);

    proc.signal(Signal::SIGTERM);
    let out = proc.finish();
    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// 6. Help
// ---------------------------------------------------------------------------

#[test]
fn top_level_help_exits_0_and_lists_the_serve_command() {
    let out = Proc::run(&["--help"], &[]);

    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        out.stderr
    );
    assert!(out.stdout.contains("Usage: tandem"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|line| line.trim_start().starts_with("serve")),
        "`serve` is not listed:\n{}",
        out.stdout
    );
}

/// Runs `tandem` with `args`, which ask for the help of `serve`: it exits 0
/// and lists every serve flag.
fn assert_help_exits_0_and_lists_every_serve_flag(args: &[&str]) {
    let out = Proc::run(args, &[]);

    assert!(
        out.status.success(),
        "exit {}; stderr:\n{}",
        out.status,
        out.stderr
    );
    let help = out.stdout;
    let flags = serve_flags();
    assert!(flags.len() >= 26, "{flags:?}");
    let missing: Vec<String> = flags
        .into_iter()
        .map(|(flag, _)| flag)
        .filter(|flag| !help.contains(flag.as_str()))
        .collect();
    assert!(missing.is_empty(), "help lacks {missing:?}:\n{help}");
}

#[test]
fn serve_help_exits_0_and_lists_every_serve_flag() {
    assert_help_exits_0_and_lists_every_serve_flag(&["serve", "--help"]);
}

#[test]
fn help_serve_exits_0_and_lists_every_serve_flag() {
    assert_help_exits_0_and_lists_every_serve_flag(&["help", "serve"]);
}

#[test]
fn serve_help_names_the_environment_variable_of_every_flag() {
    let out = Proc::run(&["serve", "--help"], &[]);

    assert!(out.status.success(), "exit {}", out.status);
    let missing: Vec<String> = serve_flags()
        .iter()
        .map(|(flag, _)| format!("TANDEM_{}", flag[2..].replace('-', "_").to_uppercase()))
        .filter(|var| !out.stdout.contains(var.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "help lacks {missing:?}:\n{}",
        out.stdout
    );
}

#[test]
fn the_readme_has_a_row_for_every_flag_with_its_variable_key_and_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (flag, default) in serve_flags() {
        let row = readme
            .lines()
            .find(|line| {
                line.strip_prefix("| `")
                    .and_then(|rest| rest.strip_prefix(flag.as_str()))
                    .is_some_and(|rest| rest.starts_with('`') || rest.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("README has no row for {flag}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = &flag[2..];
        let env = format!("`TANDEM_{}`", name.replace('-', "_").to_uppercase());
        assert_eq!(cells[2], env, "{flag}: {row}");
        // `--config` names the file, and is no key of it.
        let key = if flag == "--config" {
            String::new()
        } else {
            format!("`{}`", name.replace('-', "_"))
        };
        assert_eq!(cells[3], key, "{flag}: {row}");
        let default = default.unwrap_or_else(|| panic!("{flag}'s help shows no default"));
        assert_eq!(cells[4].trim_matches('`'), default, "{flag}: {row}");
    }
}

// ---------------------------------------------------------------------------
// Known bugs
// ---------------------------------------------------------------------------

#[test]
fn absurd_idle_timeout_is_refused_or_served_but_never_panics() {
    let mut command = tandem();
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "500000000000y",
    ]);
    let mut proc = Proc::spawn(command);

    let line = proc.first_line();

    if line.is_empty() {
        // Refused at start-up: that must be a configuration error.
        let out = proc.finish();
        assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
        assert!(out.stderr.contains("--idle-timeout"), "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        return;
    }
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let mut echoed = [0u8; 3];
    let echo = std::io::Write::write_all(&mut stream, b"abc")
        .and_then(|()| stream.read_exact(&mut echoed));
    proc.signal(Signal::SIGTERM);
    let out = proc.finish();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    echo.expect("echo with an absurd idle timeout");
    assert_eq!(&echoed, b"abc");
}
