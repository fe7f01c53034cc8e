//! Configuration of `tandem serve`: one set of options, read from three
//! places and resolved into the values the server runs with.
//!
//! Every option is a command-line flag, an environment variable
//! (`TANDEM_` plus the flag's name in upper snake case) and a key of the TOML
//! file named by `--config` (the flag's name in snake case). Precedence is
//! flags > environment > file > built-in defaults. Validation happens once,
//! after the layers are merged, so a bad value is reported the same way
//! whichever layer it came from, naming the flag, the key and the rule.
//!
//! An option is declared once, as a field of [`ServeOptions`]: clap makes
//! the flag from it, [`env_named_after_flag`] its variable, serde its key,
//! and the layers merge as maps of their keys ([`ServeOptions::or`]), so
//! no list of options is kept anywhere else: the check for misspelled
//! variables ([`unknown_variables`]) and the start-up line
//! ([`crate::startup`]) read the same declaration. Its default is the
//! library's ([`ServerConfig::default`]), set in the lowest layer
//! ([`ServeOptions::defaults`]); the help states it, and tests hold the
//! help to the library and the README's table to the help. Adding an
//! option is its field, its default (the compiler asks for it), its rule
//! in `validate` and its README row.
//!
//! This module owns parsing and validation only; it never opens sockets or
//! builds runtimes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use tandem::buffer::budget::MIN_BUDGET;
use tandem::compute::ComputeVia;
pub use tandem::duration::HumanDuration;
use tandem::echo::SimulatedWork;
use tandem::file::FileError;
use tandem::range::OutOfRange;
use tandem::server::IpRanges;
use tandem::server::{DEFAULT_PROXY_HEADER_TIMEOUT, Layout, MAX_BUFFER_MEMORY, ServerConfig};
use tandem::tls::{DEFAULT_HANDSHAKE_TIMEOUT, ServerTls, TlsError};
use tandem::{ComputeConfig, EchoConfig};

/// The listen address of the article's server.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000);
/// Listen backlog passed to listen(2); the kernel caps it at somaxconn.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Datagrams per second answered per source address with `--udp`: plenty
/// for a person or a probe, little for a reflection attack.
pub const DEFAULT_UDP_RATE_LIMIT: u32 = 100;
/// Highest minimum rate, 1 GiB/s: beyond it the rule would close
/// connections that stream as fast as loopback allows.
const MAX_MIN_RATE: u64 = 1 << 30;
/// A year as durations are written (`1y` is 365.25 days): longer timeouts
/// are typos, and far-future instants overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60 + 6 * 60 * 60);
/// Shortest idle timeout but 0 (off): the sweep ticks every 10 ms at the
/// finest, so a shorter one (`1ns` for `1s`) closes every connection
/// within two ticks, however busy it is.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
/// Idle timeouts under this are served, with a start-up warning: a client
/// that pauses to think, or a link that stalls for a second, is closed.
const WARN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// The format of the log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `--layout`: one of the library's layout names, each listed in `--help`
/// with what it runs.
fn layout_parser() -> impl TypedValueParser<Value = Layout> {
    clap::builder::PossibleValuesParser::new(
        Layout::ALL
            .iter()
            .map(|layout| PossibleValue::new(layout.as_str()).help(layout.summary())),
    )
    .try_map(|name| name.parse::<Layout>())
}

/// A boolean option's values, as `--help` lists them: every one it takes.
const BOOLEANS: [(&str, bool); 8] = [
    ("true", true),
    ("false", false),
    ("yes", true),
    ("no", false),
    ("on", true),
    ("off", false),
    ("1", true),
    ("0", false),
];

/// A boolean option's parser: the values of [`BOOLEANS`], in any case
/// (`TRUE`, `Yes`), and nothing else, so that the help's list is the whole
/// truth.
#[derive(Debug, Clone, Copy)]
struct Boolean;

impl TypedValueParser for Boolean {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<bool, clap::Error> {
        let lower = value.to_ascii_lowercase();
        match BOOLEANS.iter().find(|(name, _)| lower == *name) {
            Some(&(_, truth)) => Ok(truth),
            // clap's own refusal, which quotes the value and lists these
            // (never Ok: what it takes, the search above took).
            None => clap::builder::PossibleValuesParser::new(self.possible_values_list())
                .parse_ref(cmd, arg, value)
                .map(|_| false),
        }
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.possible_values_list().into_iter()))
    }
}

impl Boolean {
    fn possible_values_list(&self) -> Vec<PossibleValue> {
        BOOLEANS
            .iter()
            .map(|(name, _)| PossibleValue::new(*name))
            .collect()
    }
}

/// Every boolean option of [`ServeOptions`] (an `Option<bool>`), made one
/// way in one place: it takes the values of [`BOOLEANS`] ([`Boolean`]),
/// and its flag alone (`--nodelay`) means `true`.
fn boolean_option(arg: clap::Arg) -> clap::Arg {
    if arg.get_value_parser().type_id() != std::any::TypeId::of::<bool>() {
        return arg;
    }
    arg.value_name("BOOL")
        .num_args(0..=1)
        .default_missing_value("true")
        .value_parser(Boolean)
}

/// Longest line of a parse error quoted from a file: a value of megabytes on
/// one line must not become an error message of megabytes.
const QUOTED_LINE: usize = 160;
/// Most lines of a parse error kept: the position, the line and its caret.
const QUOTED_LINES: usize = 8;

/// A TOML parser's error as it is printed: its lines kept (the caret
/// diagram reads only that way), each cut to [`QUOTED_LINE`] characters.
fn quoted(message: &str) -> String {
    message
        .trim_end()
        .lines()
        .take(QUOTED_LINES)
        .map(|line| match line.char_indices().nth(QUOTED_LINE) {
            Some((cut, _)) => format!("{} [...]", &line[..cut]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How deep the TOML reader lets keys nest (its private `LIMIT`).
const TOML_DEPTH: usize = 80;
/// Longest part of a key quoted in an error.
const QUOTED_KEY: usize = 40;

/// The most deeply dotted key of a file, where it is.
#[derive(Debug, PartialEq, Eq)]
struct DeepKey {
    /// Its line, from 1.
    line: usize,
    /// The key, cut to [`QUOTED_KEY`] characters.
    text: String,
    /// How many parts the dots separate.
    parts: usize,
}

/// The key (or `[table]` header) of `text` with the most dots outside
/// quotes: what the reader's depth limit refused.
fn deepest_key(text: &str) -> Option<DeepKey> {
    let key_of = |line: &str| -> Option<(String, usize)> {
        let line = line.trim_start();
        let (mut parts, mut quote, mut key) = (1, None, String::new());
        let header = line.starts_with('[');
        for c in line.chars() {
            match (quote, c) {
                (Some(open), c) if c == open => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '.') => parts += 1,
                (None, '=') if !header => break,
                (None, ']') if header => {
                    key.push(c);
                    break;
                }
                (None, '#') => break,
                _ => {}
            }
            key.push(c);
        }
        Some((key.trim().to_owned(), parts)).filter(|(key, _)| !key.is_empty())
    };
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| key_of(line).map(|(key, parts)| (index + 1, key, parts)))
        .max_by_key(|(_, _, parts)| *parts)
        .map(|(line, key, parts)| DeepKey {
            line,
            text: match key.char_indices().nth(QUOTED_KEY) {
                Some((cut, _)) => format!("{} [...]", &key[..cut]),
                None => key,
            },
            parts,
        })
}

/// `text` with its control characters escaped (`\0`, `\u{1b}`), line
/// breaks apart: what a file or a variable holds must not reach a
/// terminal raw, as a NUL or an escape sequence would.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => c.to_string(),
            c if c.is_control() => c.escape_debug().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A file's value written as text, parsed as the command line parses it
/// (`layout`, `simulate_work`, `compute_via`).
fn by_text<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// A value written as the text [`by_text`] parses (for merging layers).
fn as_text<S: Serializer, T: fmt::Display>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

/// The file's `proxy_protocol_from`: one string of ranges separated by
/// commas, as on the command line, or a list of them.
fn ranges_from_text_or_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<IpRanges>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrList {
        Text(String),
        List(Vec<String>),
    }
    let text = match TextOrList::deserialize(deserializer)? {
        TextOrList::Text(text) => text,
        TextOrList::List(items) => items.join(","),
    };
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Names an option's environment variable after its flag, in one place
/// for every option: `--idle-timeout` reads `TANDEM_IDLE_TIMEOUT`.
pub fn env_named_after_flag(arg: clap::Arg) -> clap::Arg {
    env_named("TANDEM_", arg)
}

/// The same for `tandem bench`: `--message-size` reads
/// `TANDEM_BENCH_MESSAGE_SIZE`.
pub fn bench_env_named_after_flag(arg: clap::Arg) -> clap::Arg {
    env_named("TANDEM_BENCH_", arg)
}

fn env_named(prefix: &str, arg: clap::Arg) -> clap::Arg {
    match arg.get_long() {
        Some(long) if long != "help" => {
            let env = env_var(prefix, long);
            arg.env(env)
        }
        _ => arg,
    }
}

/// The variable of an option named `name` (its flag or its key).
fn env_var(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.replace('-', "_").to_uppercase())
}

/// The `serve` command's options as the binary builds them, each with its
/// variable: what the tests take the list of options from.
pub fn serve_command() -> clap::Command {
    ServeOptions::augment_args(clap::Command::new("serve")).mut_args(env_named_after_flag)
}

/// The `bench` command's options as the binary builds them, each with its
/// variable.
pub fn bench_command() -> clap::Command {
    tandem_bench::bench::BenchOptions::augment_args(clap::Command::new("bench"))
        .mut_args(bench_env_named_after_flag)
}

/// A variable named like tandem's (`TANDEM_...`) that no option reads:
/// likely a misspelling, which would otherwise be ignored in silence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable, its control characters escaped.
    pub name: String,
    /// The `serve` option spelled most like it, as its variable and flag.
    pub nearest: Option<(String, String)>,
}

impl fmt::Display for UnknownVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is no option's variable and is ignored", self.name)?;
        match &self.nearest {
            Some((variable, flag)) => write!(f, "; did you mean {variable} (--{flag})?"),
            None => Ok(()),
        }
    }
}

/// The `TANDEM_` variables of `vars` that no option of `serve` or `bench`
/// reads, each with the `serve` option spelled most like it. The options
/// come from the commands' declarations, so a new option is known as soon
/// as it is declared. Variables an orchestrator sets for a service named
/// tandem (`set_for_a_service`) are left out.
pub fn unknown_variables(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<UnknownVariable> {
    let variables = |command: clap::Command| -> Vec<(String, String)> {
        command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_str()?.to_owned();
                Some((env, arg.get_long()?.to_owned()))
            })
            .collect()
    };
    let serve = variables(serve_command());
    let bench = variables(bench_command());
    let known = |name: &str| serve.iter().chain(&bench).any(|(env, _)| env == name);
    let mut unknown: Vec<UnknownVariable> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.to_string_lossy();
            let rest = name.strip_prefix("TANDEM_")?;
            if known(&name) || set_for_a_service(&name, &value.to_string_lossy()) {
                return None;
            }
            let nearest = serve
                .iter()
                .map(|(env, flag)| (edit_distance(rest, &env["TANDEM_".len()..]), env, flag))
                .min_by_key(|(distance, _, _)| *distance)
                .filter(|(distance, _, _)| *distance <= (rest.len() / 3).max(2))
                .map(|(_, env, flag)| (env.clone(), flag.clone()));
            Some(UnknownVariable {
                name: printable(&name),
                nearest,
            })
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}

/// Whether `name` is one of the variables Kubernetes (and Docker's links)
/// give the containers beside a service: for a service `tandem` on port
/// 8000, `TANDEM_SERVICE_HOST`, `TANDEM_SERVICE_PORT`,
/// `TANDEM_SERVICE_PORT_<NAME>`, `TANDEM_PORT` (`tcp://10.0.0.1:8000`),
/// `TANDEM_PORT_8000_TCP` and its `_PROTO`, `_PORT` and `_ADDR`; the same
/// for a service `tandem-<anything>`. A pod cannot opt out of these, so
/// they are no mistake of the operator's; `TANDEM_PORT=9000`, a guess at
/// an option, is.
fn set_for_a_service(name: &str, value: &str) -> bool {
    let words: Vec<&str> = name.split('_').collect();
    words
        .iter()
        .enumerate()
        .any(|(at, word)| match (*word, &words[at + 1..]) {
            ("SERVICE", ["HOST"] | ["PORT", ..]) => true,
            ("PORT", []) => ["tcp://", "udp://", "sctp://"]
                .iter()
                .any(|scheme| value.starts_with(scheme)),
            ("PORT", [port, protocol, detail @ ..]) => {
                port.bytes().all(|b| b.is_ascii_digit())
                    && matches!(*protocol, "TCP" | "UDP" | "SCTP")
                    && matches!(detail, [] | ["PROTO" | "PORT" | "ADDR"])
            }
            _ => false,
        })
}

/// Levenshtein distance: single-character insertions, deletions and
/// substitutions from `a` to `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The default an option's help states (`[default: X]`), if it states one.
pub fn stated_default(arg: &clap::Arg) -> Option<String> {
    let help = arg.get_help()?.to_string();
    help.trim_end_matches('.')
        .rsplit_once("[default: ")
        .and_then(|(_, value)| value.strip_suffix(']'))
        .map(str::to_owned)
}

/// The options of `tandem serve`, each of them optional so that the layers
/// can be told apart. The same struct is read from the command line (with
/// environment variables) and from the TOML file.
#[derive(Debug, Clone, Default, Args, Deserialize, Serialize)]
#[command(mut_args = boolean_option)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// TOML file with any of these options as keys (e.g. `workers = 4`) [default: none].
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on: IPv4, IPv6 (`[::1]:8000`) or a host name
    /// (`localhost:8000`), resolved at start-up, of which the first address
    /// that can be bound is taken; port 0 picks a free port
    /// [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    #[serde(default, deserialize_with = "by_text", serialize_with = "as_text")]
    pub listen: Option<ListenAddress>,

    /// Serve metrics, health and readiness over HTTP on this address, from
    /// a runtime of its own [default: off].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Runtime layout: split, single or sharded [default: split].
    #[arg(long, value_parser = layout_parser())]
    #[serde(default, deserialize_with = "by_text", serialize_with = "as_text")]
    pub layout: Option<Layout>,

    /// Threads of the acceptor runtime (split and sharded) [default: 1].
    #[arg(long, value_name = "N")]
    pub acceptor_threads: Option<usize>,

    /// Worker threads (split, single) or shards (sharded) [default: available parallelism].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Capacity of the hand-off queue between acceptor and workers [default: 4000].
    #[arg(long, value_name = "N")]
    pub handoff_capacity: Option<usize>,

    /// Connections served at once; lowered to fit RLIMIT_NOFILE [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Listen backlog: connections the kernel queues while the server is full [default: 1024].
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,

    /// SO_REUSEPORT: let several tandem processes listen on the same
    /// address and port, the kernel spreading connections among them
    /// [default: false].
    #[arg(long)]
    pub reuse_port: Option<bool>,

    /// Largest chunk read and echoed at once, in bytes: reads start at
    /// 4 KiB and grow while they fill their buffer, up to this [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub buffer_size: Option<usize>,

    /// Bytes all data buffers may hold together, lent or cached; a read
    /// past it reads less or waits, and TCP pushes back [default: 256 MiB,
    /// or a quarter of the memory, if less].
    #[arg(long, value_name = "BYTES")]
    pub buffer_memory: Option<usize>,

    /// Set TCP_NODELAY on accepted sockets [default: true].
    #[arg(long)]
    pub nodelay: Option<bool>,

    /// Write a `\n` after each echoed chunk as the article's server does [default: false].
    #[arg(long)]
    pub append_newline: Option<bool>,

    /// Benchmarking knob: CPU time spent per chunk before echoing it, to
    /// model CPU-heavy handlers: a duration per chunk (500us), or per KiB
    /// of the chunk (200us/KiB) [default: 0s].
    #[arg(long, value_name = "WORK")]
    #[serde(default, deserialize_with = "by_text", serialize_with = "as_text")]
    pub simulate_work: Option<SimulatedWork>,

    /// Threads of the compute runtime, which takes chunks' work above
    /// --offload-above off the serving threads; 0 runs all work inline
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub compute_threads: Option<usize>,

    /// Which threads run the compute work: runtime (a dedicated runtime,
    /// tandem-compute) or spawn-blocking (tokio's blocking pool, capped at
    /// --compute-threads) [default: runtime].
    #[arg(long, value_name = "VIA")]
    #[serde(default, deserialize_with = "by_text", serialize_with = "as_text")]
    pub compute_via: Option<ComputeVia>,

    /// Compute jobs admitted at once, queued or running; beyond it a
    /// connection waits, and stops reading [default: 128].
    #[arg(long, value_name = "N")]
    pub compute_queue: Option<usize>,

    /// A chunk's work goes to the compute threads only above this; less
    /// runs inline [default: 50us].
    #[arg(long, value_name = "DURATION")]
    pub offload_above: Option<HumanDuration>,

    /// Close a connection silent for this long; 0 disables [default: 300s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<HumanDuration>,

    /// Bytes per second a connection must average over each idle-timeout
    /// window, counting the larger of the bytes it sent and the bytes it
    /// took, or be closed; 0 disables [default: 1].
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub min_rate: Option<u64>,

    /// Connections served at once from one client address (IPv6: one /64)
    /// beyond which new ones are closed at once [default: off].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// How long live connections are served after SIGTERM, SIGINT or
    /// SIGQUIT [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// After --shutdown-timeout, how long the connections still open get
    /// to take what they are owed, and the runtimes to stop: a shutdown
    /// takes at most the two together [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<HumanDuration>,

    /// Also echo UDP datagrams on the same address and port [default: false].
    #[arg(long)]
    pub udp: Option<bool>,

    /// UDP datagrams answered per second per source address [default: 100].
    #[arg(long, value_name = "N")]
    pub udp_rate_limit: Option<u32>,

    /// Require a PROXY protocol header (v1 or v2) at the start of every
    /// connection, and take the client address from it [default: false].
    #[arg(long)]
    pub proxy_protocol: Option<bool>,

    /// How long a connection may take to send its PROXY header [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub proxy_protocol_timeout: Option<HumanDuration>,

    /// The load balancers trusted to send a PROXY header: addresses or
    /// CIDR ranges separated by commas (10.0.0.0/8,192.0.2.7); a connection
    /// from any other peer is closed unechoed. Needs --proxy-protocol
    /// [default: any peer].
    #[arg(long, value_name = "CIDRS")]
    #[serde(
        default,
        deserialize_with = "ranges_from_text_or_list",
        serialize_with = "as_text"
    )]
    pub proxy_protocol_from: Option<IpRanges>,

    /// Serve echo over TLS with this certificate chain (PEM, the server's
    /// own certificate first); needs --tls-key [default: off].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing)]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1) [default: off].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing)]
    pub tls_key: Option<PathBuf>,

    /// How long a client may take over the TLS handshake [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub tls_handshake_timeout: Option<HumanDuration>,

    /// Log format on stderr: text or json [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// `--listen`: an IP address or a host name, and a port. A name is resolved
/// at start-up; the server binds its first address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    text: String,
    host: String,
    port: u16,
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not an address and port (write it like 127.0.0.1:8000, \
                 [::1]:8000 or localhost:8000)"
            )
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        // An IPv6 address is written in brackets, to tell it from the port.
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() {
            return Err(bad());
        }
        refuse_shorthand_ipv4(host, port)?;
        if let Ok(ip) = host.parse::<std::net::Ipv6Addr>()
            && let Some(v4) = ip.to_ipv4_mapped()
        {
            // An IPv6 listener is IPv6-only (bind_with), and such a socket
            // cannot bind a mapped address (EINVAL).
            return Err(format!(
                "{text:?} is an IPv4-mapped IPv6 address, which cannot be listened on: \
                 write {v4}:{port}"
            ));
        }
        Ok(ListenAddress {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

/// The resolver reads a host of numbers and dots as an IPv4 address the
/// way inet_aton(3) does: `0` is 0.0.0.0 (every interface), `127.1` is
/// 127.0.0.1, `0x7f000001` too. Such a host is no name, and a typo for the
/// address it is read as is too easy: it must be written in full.
fn refuse_shorthand_ipv4(host: &str, port: u16) -> Result<(), String> {
    let number = |part: &str| {
        let digits = part
            .strip_prefix("0x")
            .or_else(|| part.strip_prefix("0X"))
            .map_or((part, 10), |hex| (hex, 16));
        !digits.0.is_empty() && digits.0.chars().all(|c| c.is_digit(digits.1))
    };
    if host.split('.').all(number) && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "{host:?} is neither a host name nor an IPv4 address in full (four numbers: \
             0.0.0.0:{port} listens on every interface, 127.0.0.1:{port} on the loopback)"
        ));
    }
    Ok(())
}

/// A listen address written as an address (the default).
impl From<SocketAddr> for ListenAddress {
    fn from(addr: SocketAddr) -> Self {
        ListenAddress {
            text: addr.to_string(),
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl ListenAddress {
    /// Every address it stands for: itself, or what the name resolves to.
    fn resolve(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let failed = |why: String| ConfigError::Invalid {
            option: OptionName("listen"),
            rule: format!("must resolve to an address: {why}"),
            value: self.text.clone(),
        };
        let resolved: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|err| failed(err.to_string()))?
            .collect();
        if resolved.is_empty() {
            return Err(failed("no address".to_owned()));
        }
        Ok(resolved)
    }
}

/// Everything `tandem serve` runs with, after merging and validation.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `--listen` as it was given (a name, or a port 0, before resolving
    /// and binding).
    pub listen: String,
    /// Every address `--listen` stands for (one, unless a name resolved to
    /// several), in the order they are tried; never empty.
    pub listen_resolved: Vec<SocketAddr>,
    /// Address of the admin endpoint, if any.
    pub admin_listen: Option<SocketAddr>,
    /// Listen backlog.
    pub backlog: u32,
    /// Share the port with other processes (SO_REUSEPORT).
    pub reuse_port: bool,
    /// Also echo UDP, answering each source at most this many times a
    /// second; `None` without `--udp`.
    pub udp_rate_limit: Option<u32>,
    /// The TLS identity and handshake timeout; `None` without `--tls-cert`.
    pub tls: Option<ServerTls>,
    /// Runtimes, limits and timeouts of the server.
    pub server: ServerConfig,
    /// Behaviour of the echo handler.
    pub echo: EchoConfig,
    /// Where the echo's heavy work runs.
    pub compute: ComputeConfig,
    /// Log format on stderr.
    pub log_format: LogFormat,
    /// Every option as the layers set it, over the library's defaults:
    /// what the values above were made from, and what the start-up line
    /// states ([`crate::startup`]).
    pub options: ServeOptions,
}

impl ServeConfig {
    /// What is served as configured but is likely a mistake, for the
    /// start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(idle) = self.server.idle_timeout
            && idle < WARN_IDLE_TIMEOUT
        {
            warnings.push(format!(
                "--idle-timeout {} is under {}: a client that pauses for longer, or a link \
                 that stalls, is closed",
                humantime::format_duration(idle),
                humantime::format_duration(WARN_IDLE_TIMEOUT)
            ));
        }
        warnings
    }
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not: missing, unreadable, not a regular file, or too large.
        cause: FileError,
    },
    /// The layers could not be merged (an option that does not read back
    /// as it was written).
    #[error("cannot merge the configuration's layers: {0}")]
    Merge(String),
    /// The file is not valid TOML or has a key or value that does not fit.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's description, with the key and its position.
        message: String,
    },
    /// The TLS certificate or key cannot be used.
    #[error("invalid --tls-cert/--tls-key: {0}")]
    Tls(#[from] TlsError),
    /// A value is outside what the option allows.
    #[error("invalid {option}: {rule}, got {value}")]
    Invalid {
        /// The option, named as flag, TOML key and environment variable.
        option: OptionName,
        /// What the option requires.
        rule: String,
        /// The value given.
        value: String,
    },
}

/// An option's three names, so that an error message points at whichever
/// layer the user set it in. Holds the TOML key (snake case); the flag and
/// the environment variable derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionName(pub &'static str);

impl fmt::Display for OptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.0;
        write!(
            f,
            "--{} (key `{key}`, {})",
            key.replace('_', "-"),
            env_var("TANDEM_", key)
        )
    }
}

impl ServeOptions {
    /// Reads a TOML file of options. Unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = tandem::file::read_small(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let text = String::from_utf8(bytes)
            .map_err(|err| parse_error(format!("not UTF-8 text: {}", err.utf8_error())))?;
        toml::from_str(&text).map_err(|err| {
            // The TOML reader refuses a key nested too deeply without saying
            // where (its error has no span): found here instead.
            let deep = err
                .span()
                .is_none()
                .then(|| deepest_key(&text))
                .flatten()
                .filter(|key| key.parts >= TOML_DEPTH);
            match deep {
                Some(key) => parse_error(format!(
                    "line {}: the key `{}` is {} levels deep; the TOML reader takes fewer \
                     than {TOML_DEPTH} ({})",
                    key.line,
                    key.text,
                    key.parts,
                    err.message()
                )),
                None => parse_error(quoted(&err.to_string())),
            }
        })
    }

    /// Fills every option that this layer leaves unset from `lower`: the
    /// two layers meet as maps of their set options (JSON values, which
    /// hold any integer an option takes), the upper's keys win, and the map
    /// is read back. No other option is listed here; the declaration above
    /// is the only one. `--config` itself is never a key, and the paths,
    /// which need not be UTF-8 and so cannot be JSON, are not carried in
    /// the maps (`skip_serializing`): each stays the upper layer's, else
    /// the lower's.
    pub fn or(self, lower: ServeOptions) -> Result<ServeOptions, ConfigError> {
        let config = self.config.clone().or_else(|| lower.config.clone());
        let tls_cert = self.tls_cert.clone().or_else(|| lower.tls_cert.clone());
        let tls_key = self.tls_key.clone().or_else(|| lower.tls_key.clone());
        let set = |layer: &ServeOptions| match serde_json::to_value(layer) {
            Ok(serde_json::Value::Object(options)) => Ok(options
                .into_iter()
                .filter(|(_, value)| !value.is_null())
                .collect::<serde_json::Map<_, _>>()),
            Ok(other) => Err(ConfigError::Merge(format!("not a map: {other}"))),
            Err(err) => Err(ConfigError::Merge(err.to_string())),
        };
        let mut merged = set(&lower)?;
        merged.extend(set(&self)?);
        let mut options: ServeOptions = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|err| ConfigError::Merge(err.to_string()))?;
        options.config = config;
        options.tls_cert = tls_cert;
        options.tls_key = tls_key;
        Ok(options)
    }

    /// Merges the flags and environment (self) over the file named by
    /// `--config`, if any, fills in defaults and validates the result.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let merged = match &self.config {
            Some(path) => {
                let file = ServeOptions::from_file(path)?;
                self.or(file)?
            }
            None => self,
        };
        merged.validate()
    }

    /// The lowest layer: every option at the library's default, or unset
    /// where it is off until asked for. Each field is named, so that an
    /// option cannot be added without its default; what the server runs
    /// with is then read from one place, the merged layers, which the
    /// start-up line states whole.
    pub fn defaults() -> ServeOptions {
        let server = ServerConfig::default();
        let echo = EchoConfig::default();
        let compute = ComputeConfig::default();
        ServeOptions {
            config: None,
            listen: Some(ListenAddress::from(DEFAULT_LISTEN)),
            admin_listen: None,
            layout: Some(server.layout),
            acceptor_threads: Some(server.acceptor_threads),
            workers: Some(server.workers),
            handoff_capacity: Some(server.handoff_capacity),
            max_connections: Some(server.max_connections),
            backlog: Some(DEFAULT_BACKLOG),
            reuse_port: Some(false),
            buffer_size: Some(echo.buffer_size),
            // Worked out here rather than by the server, so that the
            // start-up line states the budget in bytes.
            buffer_memory: Some(
                server
                    .buffer_memory
                    .unwrap_or_else(tandem::buffer::default_budget),
            ),
            nodelay: Some(server.nodelay),
            append_newline: Some(echo.append_newline),
            simulate_work: Some(echo.simulate_work),
            compute_threads: Some(compute.threads),
            compute_via: Some(compute.via),
            compute_queue: Some(compute.queue),
            offload_above: Some(HumanDuration(echo.offload_above)),
            idle_timeout: Some(HumanDuration(server.idle_timeout.unwrap_or_default())),
            min_rate: Some(server.min_rate),
            max_connections_per_ip: server.max_connections_per_ip,
            shutdown_timeout: Some(HumanDuration(server.shutdown_timeout)),
            shutdown_grace: Some(HumanDuration(server.shutdown_grace)),
            udp: Some(false),
            udp_rate_limit: Some(DEFAULT_UDP_RATE_LIMIT),
            proxy_protocol: Some(server.proxy_protocol.is_some()),
            proxy_protocol_timeout: Some(HumanDuration(DEFAULT_PROXY_HEADER_TIMEOUT)),
            proxy_protocol_from: server.proxy_protocol_from,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout: Some(HumanDuration(DEFAULT_HANDSHAKE_TIMEOUT)),
            log_format: Some(LogFormat::Text),
        }
    }

    /// Fills in defaults, as the lowest layer, and checks every value
    /// against its rule. When several are wrong, the first reported is the
    /// first in this order.
    fn validate(self) -> Result<ServeConfig, ConfigError> {
        let options = self.or(ServeOptions::defaults())?;
        let server = options.server_config()?;
        let backlog = filled(options.backlog, "backlog")?;
        let backlog = in_range("backlog", backlog, 1, i32::MAX as u32)?;
        let echo = options.echo_config()?;
        let compute = options.compute_config()?;
        let listen = filled(options.listen.as_ref(), "listen")?;
        Ok(ServeConfig {
            listen_resolved: listen.resolve()?,
            listen: listen.to_string(),
            admin_listen: options.admin_listen,
            backlog,
            reuse_port: filled(options.reuse_port, "reuse_port")?,
            udp_rate_limit: options.udp_rate_limit()?,
            tls: options.tls()?,
            server,
            echo,
            compute,
            log_format: filled(options.log_format, "log_format")?,
            options,
        })
    }

    /// The server's runtimes, limits and timeouts.
    fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let idle_timeout = self.idle_timeout()?;
        let min_rate = filled(self.min_rate, "min_rate")?;
        let min_rate = in_range("min_rate", min_rate, 0, MAX_MIN_RATE)?;
        let shutdown_timeout = filled(self.shutdown_timeout, "shutdown_timeout")?;
        let shutdown_timeout = at_most("shutdown_timeout", shutdown_timeout.0)?;
        let shutdown_grace = filled(self.shutdown_grace, "shutdown_grace")?;
        let shutdown_grace = at_most("shutdown_grace", shutdown_grace.0)?;
        let buffer_memory = self
            .buffer_memory
            .map(|bytes| in_range("buffer_memory", bytes, MIN_BUDGET, MAX_BUFFER_MEMORY))
            .transpose()?;
        let (proxy_protocol, proxy_protocol_from) = self.proxy_protocol()?;
        let server = ServerConfig::default()
            .layout(filled(self.layout, "layout")?)
            .acceptor_threads(filled(self.acceptor_threads, "acceptor_threads")?)
            .workers(filled(self.workers, "workers")?)
            .handoff_capacity(filled(self.handoff_capacity, "handoff_capacity")?)
            .max_connections(filled(self.max_connections, "max_connections")?)
            .max_connections_per_ip(self.max_connections_per_ip)
            .idle_timeout(idle_timeout)
            .min_rate(min_rate)
            .shutdown_timeout(shutdown_timeout)
            .shutdown_grace(shutdown_grace)
            .buffer_memory(buffer_memory)
            .nodelay(filled(self.nodelay, "nodelay")?)
            .proxy_protocol(proxy_protocol)
            .proxy_protocol_from(proxy_protocol_from);
        server.validate()?;
        Ok(server)
    }

    /// `--idle-timeout`, `None` for 0 (off).
    fn idle_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        let idle_timeout = filled(self.idle_timeout, "idle_timeout")?;
        let idle_timeout = at_most("idle_timeout", idle_timeout.0)?;
        if !idle_timeout.is_zero() && idle_timeout < MIN_IDLE_TIMEOUT {
            return Err(ConfigError::Invalid {
                option: OptionName("idle_timeout"),
                rule: format!(
                    "must be 0 (off) or at least {}: the idle rule checks every 10 ms at \
                     the finest, so a shorter timeout closes every connection",
                    humantime::format_duration(MIN_IDLE_TIMEOUT)
                ),
                value: humantime::format_duration(idle_timeout).to_string(),
            });
        }
        Ok(Some(idle_timeout).filter(|d| !d.is_zero()))
    }

    /// With `--proxy-protocol`, how long a connection may take over its
    /// header, and the peers trusted to send one; without, neither, and
    /// a list of trusted peers is a mistake.
    fn proxy_protocol(&self) -> Result<(Option<Duration>, Option<IpRanges>), ConfigError> {
        if filled(self.proxy_protocol, "proxy_protocol")? {
            let timeout = filled(self.proxy_protocol_timeout, "proxy_protocol_timeout")?;
            let timeout = positive("proxy_protocol_timeout", timeout.0)?;
            return Ok((Some(timeout), self.proxy_protocol_from.clone()));
        }
        match &self.proxy_protocol_from {
            None => Ok((None, None)),
            Some(from) => Err(ConfigError::Invalid {
                option: OptionName("proxy_protocol_from"),
                rule: "needs --proxy-protocol as well".to_owned(),
                value: from.to_string(),
            }),
        }
    }

    /// The echo handler's buffers and work.
    fn echo_config(&self) -> Result<EchoConfig, ConfigError> {
        let buffer_size = filled(self.buffer_size, "buffer_size")?;
        EchoConfig::default().buffer_size(buffer_size).validate()?;
        let simulate_work = filled(self.simulate_work, "simulate_work")?;
        at_most("simulate_work", simulate_work.duration())?;
        let offload_above = filled(self.offload_above, "offload_above")?;
        let offload_above = at_most("offload_above", offload_above.0)?;
        Ok(EchoConfig::default()
            .buffer_size(buffer_size)
            .append_newline(filled(self.append_newline, "append_newline")?)
            .simulate_work(simulate_work)
            .offload_above(offload_above))
    }

    /// Where the echo's heavy work runs.
    fn compute_config(&self) -> Result<ComputeConfig, ConfigError> {
        let compute = ComputeConfig::default()
            .threads(filled(self.compute_threads, "compute_threads")?)
            .queue(filled(self.compute_queue, "compute_queue")?)
            .via(filled(self.compute_via, "compute_via")?);
        compute.validate()?;
        Ok(compute)
    }

    /// With `--udp`, the datagrams answered per second per source;
    /// `None` without.
    fn udp_rate_limit(&self) -> Result<Option<u32>, ConfigError> {
        if !filled(self.udp, "udp")? {
            return Ok(None);
        }
        let rate = filled(self.udp_rate_limit, "udp_rate_limit")?;
        in_range("udp_rate_limit", rate, 1, 1_000_000).map(Some)
    }

    /// Loads the TLS identity, if one is configured: both files or
    /// neither, whichever layers they come from.
    fn tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (cert, _) => {
                let (given, missing) = if cert.is_some() {
                    ("tls_cert", "--tls-key")
                } else {
                    ("tls_key", "--tls-cert")
                };
                return Err(ConfigError::Invalid {
                    option: OptionName(given),
                    rule: format!("needs {missing} as well"),
                    value: "only one of the pair".to_owned(),
                });
            }
        };
        let timeout = filled(self.tls_handshake_timeout, "tls_handshake_timeout")?;
        let timeout = positive("tls_handshake_timeout", timeout.0)?;
        Ok(Some(
            ServerTls::from_pem_files(cert, key)?.with_handshake_timeout(timeout),
        ))
    }
}

/// The value of an option that [`ServeOptions::defaults`] sets, once that
/// layer is under the others: never missing, but refused rather than
/// panicked on were an option given no default there.
fn filled<T>(value: Option<T>, option: &'static str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::Merge(format!("{option} has no default")))
}

/// The library's own range checks, reported under the option's three names.
impl From<OutOfRange> for ConfigError {
    fn from(out: OutOfRange) -> Self {
        ConfigError::Invalid {
            option: OptionName(out.field),
            rule: out.rule(),
            value: out.value,
        }
    }
}

/// The library's range check, for the options that only the command line has.
fn in_range<T>(option: &'static str, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    Ok(tandem::range::in_range(option, value, min..=max)?)
}

fn at_most(option: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value > MAX_TIMEOUT {
        return Err(ConfigError::Invalid {
            option: OptionName(option),
            rule: format!(
                "must be at most {}",
                humantime::format_duration(MAX_TIMEOUT)
            ),
            value: humantime::format_duration(value).to_string(),
        });
    }
    Ok(value)
}

/// A timeout that must be neither zero nor beyond a year.
fn positive(option: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::Invalid {
            option: OptionName(option),
            rule: "must be more than 0".to_owned(),
            value: "0s".to_owned(),
        });
    }
    at_most(option, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<ServeOptions, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tandem.toml");
        std::fs::write(&path, text).unwrap();
        ServeOptions::from_file(&path)
    }

    #[test]
    fn a_parse_error_keeps_its_caret_under_the_line_and_quotes_at_most_a_line() {
        let err = file("layout = \"diagonal\"\n").unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert!(lines.len() >= 3, "{err}");
        assert!(
            lines
                .iter()
                .any(|line| line.trim_start().starts_with("1 | layout")),
            "{err}"
        );
        assert!(lines.iter().any(|line| line.contains('^')), "{err}");
        // A value of a megabyte on one line is quoted cut, not whole.
        let long = format!("listen = \"{}\"\n", "x".repeat(1_000_000));
        let err = file(&long).unwrap_err().to_string();
        assert!(err.len() < 2_000, "{} bytes", err.len());
        assert!(err.contains("[...]"), "{err}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = ServeOptions::default().resolve().unwrap();
        assert_eq!(config.listen_resolved, [DEFAULT_LISTEN]);
        assert_eq!(config.server.layout, Layout::Split);
        assert_eq!(config.server.handoff_capacity, 4000);
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.server.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
        assert!(config.server.nodelay);
        assert_eq!(config.server.min_rate, 1);
        assert_eq!(config.server.max_connections_per_ip, None);
        assert_eq!(config.echo.buffer_size, 65_536);
        assert!(!config.echo.append_newline);
        assert_eq!(config.backlog, 1024);
    }

    #[test]
    fn the_help_shows_the_librarys_defaults() {
        let command = serve_command();
        let shown = |flag: &str| -> String {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("no --{flag}"));
            stated_default(arg).unwrap_or_else(|| panic!("--{flag} shows no default"))
        };
        let duration = |flag: &str| humantime::parse_duration(&shown(flag)).unwrap();
        let server = ServerConfig::default();
        let echo = EchoConfig::default();
        assert_eq!(shown("layout"), server.layout.to_string());
        assert_eq!(
            shown("acceptor-threads"),
            server.acceptor_threads.to_string()
        );
        assert_eq!(
            shown("handoff-capacity"),
            server.handoff_capacity.to_string()
        );
        assert_eq!(shown("max-connections"), server.max_connections.to_string());
        assert_eq!(shown("max-connections-per-ip"), "off");
        assert_eq!(server.max_connections_per_ip, None);
        assert_eq!(Some(duration("idle-timeout")), server.idle_timeout);
        assert_eq!(shown("min-rate"), server.min_rate.to_string());
        assert_eq!(duration("shutdown-timeout"), server.shutdown_timeout);
        assert_eq!(shown("nodelay"), server.nodelay.to_string());
        assert_eq!(shown("proxy-protocol"), "false");
        assert_eq!(server.proxy_protocol, None);
        assert_eq!(
            duration("proxy-protocol-timeout"),
            DEFAULT_PROXY_HEADER_TIMEOUT
        );
        assert_eq!(shown("buffer-size"), echo.buffer_size.to_string());
        assert_eq!(shown("append-newline"), echo.append_newline.to_string());
        assert_eq!(shown("simulate-work"), echo.simulate_work.to_string());
        assert_eq!(duration("offload-above"), echo.offload_above);
        let compute = ComputeConfig::default();
        assert_eq!(shown("compute-threads"), compute.threads.to_string());
        assert_eq!(shown("compute-queue"), compute.queue.to_string());
        assert_eq!(shown("compute-via"), compute.via.to_string());
        assert_eq!(duration("tls-handshake-timeout"), DEFAULT_HANDSHAKE_TIMEOUT);
    }

    #[test]
    fn paths_cross_the_layers_even_when_they_are_not_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let lower = file("tls_cert = \"/file/cert.pem\"\ntls_key = \"/file/key.pem\"\n").unwrap();
        let not_utf8 = PathBuf::from(OsStr::from_bytes(b"/flag/\xffkey.pem"));
        let upper = ServeOptions {
            tls_key: Some(not_utf8.clone()),
            workers: Some(3),
            ..ServeOptions::default()
        };
        let merged = upper.or(lower).unwrap();
        assert_eq!(merged.tls_cert, Some(PathBuf::from("/file/cert.pem")));
        assert_eq!(merged.tls_key, Some(not_utf8));
        assert_eq!(merged.workers, Some(3));
    }

    #[test]
    fn file_keys_are_the_flag_names_in_snake_case() {
        let options = file(
            "listen = \"[::1]:9000\"\nlayout = \"sharded\"\nhandoff_capacity = 7\n\
             append_newline = true\nidle_timeout = \"250ms\"\nshutdown_timeout = \"1m\"\n",
        )
        .unwrap();
        let config = options.resolve().unwrap();
        assert_eq!(config.listen_resolved, ["[::1]:9000".parse().unwrap()]);
        assert_eq!(config.server.layout, Layout::Sharded);
        assert_eq!(config.server.handoff_capacity, 7);
        assert!(config.echo.append_newline);
        assert_eq!(config.server.idle_timeout, Some(Duration::from_millis(250)));
        assert_eq!(config.server.shutdown_timeout, Duration::from_secs(60));
    }

    #[test]
    fn unknown_file_key_is_an_error_that_names_it() {
        let err = file("handoff_capacty = 7\n").unwrap_err().to_string();
        assert!(err.contains("handoff_capacty"), "{err}");
    }

    #[test]
    fn zero_idle_timeout_disables_it() {
        let options = ServeOptions {
            idle_timeout: Some("0s".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(options.resolve().unwrap().server.idle_timeout, None);
    }

    #[test]
    fn zero_handoff_capacity_names_flag_key_and_env() {
        let options = ServeOptions {
            handoff_capacity: Some(0),
            ..Default::default()
        };
        let err = options.resolve().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid --handoff-capacity (key `handoff_capacity`, TANDEM_HANDOFF_CAPACITY): \
             must be between 1 and 10000000, got 0"
        );
    }

    #[test]
    fn a_timeout_beyond_a_year_is_refused() {
        let options = ServeOptions {
            idle_timeout: Some("500000000000y".parse().unwrap()),
            ..Default::default()
        };
        let err = options.resolve().unwrap_err().to_string();
        assert!(err.starts_with("invalid --idle-timeout"), "{err}");
    }

    #[test]
    fn higher_layer_wins_field_by_field() {
        let high = ServeOptions {
            workers: Some(3),
            ..Default::default()
        };
        let low = ServeOptions {
            workers: Some(5),
            buffer_size: Some(100),
            ..Default::default()
        };
        let merged = high.or(low).unwrap();
        assert_eq!(merged.workers, Some(3));
        assert_eq!(merged.buffer_size, Some(100));
    }

    #[test]
    fn a_huge_number_in_a_merged_layer_is_refused_by_its_rule() {
        // Beyond what a TOML integer holds (i64): the merge keeps it, and
        // the option's own rule refuses it, naming the option.
        let high = ServeOptions {
            min_rate: Some(u64::MAX),
            ..Default::default()
        };
        let low = file("workers = 2\n").unwrap();
        let merged = high.or(low).unwrap();
        assert_eq!(merged.workers, Some(2));
        let err = merged.validate().unwrap_err().to_string();
        assert!(err.contains("--min-rate"), "{err}");
    }

    #[test]
    fn every_kind_of_option_survives_a_merge_as_it_was_set() {
        let low = file(
            "listen = \"[::1]:9000\"\nlayout = \"sharded\"\nworkers = 3\nbacklog = 7\n\
             nodelay = false\nidle_timeout = \"1m 30s\"\nsimulate_work = \"0\"\n\
             tls_cert = \"/etc/cert.pem\"\nlog_format = \"json\"\nmin_rate = 0\n",
        )
        .unwrap();
        let high = ServeOptions {
            config: Some(PathBuf::from("/etc/tandem.toml")),
            ..Default::default()
        };
        let merged = high.or(low.clone()).unwrap();
        let table = |options: &ServeOptions| toml::Table::try_from(options).unwrap();
        assert_eq!(table(&merged), table(&low));
        // Every key but the path, which crosses layers as a path.
        assert_eq!(table(&low).len(), 9, "{:?}", table(&low));
        assert_eq!(merged.tls_cert, Some(PathBuf::from("/etc/cert.pem")));
        assert_eq!(merged.config, Some(PathBuf::from("/etc/tandem.toml")));
        assert_eq!(merged.layout, Some(Layout::Sharded));
        assert_eq!(
            merged.idle_timeout.map(|d| d.0),
            Some(Duration::from_secs(90))
        );
    }

    fn vars(names: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        names
            .iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect()
    }

    #[test]
    fn an_unknown_variable_is_named_with_the_option_spelled_most_like_it() {
        let unknown = unknown_variables(vars(&[
            ("TANDEM_IDLE_TIMOUT", "5s"),
            ("TANDEM_PORT", "9000"),
            ("TANDEM_WORKERS", "2"),
            ("TANDEM_BENCH_TARGET", "127.0.0.1:8000"),
            ("HOME", "/root"),
        ]));
        let said: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "TANDEM_IDLE_TIMOUT is no option's variable and is ignored; \
                 did you mean TANDEM_IDLE_TIMEOUT (--idle-timeout)?",
                // A guess at an option, not what Kubernetes sets.
                "TANDEM_PORT is no option's variable and is ignored",
            ]
        );
    }

    #[test]
    fn the_variables_kubernetes_sets_for_a_service_are_not_unknown() {
        for (name, value) in [
            ("TANDEM_SERVICE_HOST", "10.0.0.1"),
            ("TANDEM_SERVICE_PORT", "8000"),
            ("TANDEM_SERVICE_PORT_ECHO", "8000"),
            ("TANDEM_PORT", "tcp://10.0.0.1:8000"),
            ("TANDEM_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
            ("TANDEM_PORT_8000_UDP_PROTO", "udp"),
            ("TANDEM_ADMIN_PORT_9000_TCP_ADDR", "10.0.0.1"),
            ("TANDEM_ADMIN_SERVICE_HOST", "10.0.0.1"),
        ] {
            assert!(set_for_a_service(name, value), "{name}");
        }
        assert!(!set_for_a_service("TANDEM_PORT", "9000"));
        assert!(!set_for_a_service("TANDEM_PORT_8000", "x"));
    }

    #[test]
    fn a_host_of_numbers_must_be_a_whole_ipv4_address() {
        for text in [
            "0:8000",
            "127.1:8000",
            "2130706433:80",
            "0x7f000001:80",
            "010.0.0.1:80",
        ] {
            assert!(text.parse::<ListenAddress>().is_err(), "{text}");
        }
        for text in [
            "0.0.0.0:8000",
            "127.0.0.1:0",
            "localhost:80",
            "1password.example:80",
        ] {
            assert!(text.parse::<ListenAddress>().is_ok(), "{text}");
        }
    }

    #[test]
    fn the_deepest_key_is_found_on_its_line_outside_quotes() {
        let text = "a.b = 1\n\"x.y.z\".c = 2\n[t.u.v.w]\nk = \"a.b.c.d.e.f\"\n";
        let key = deepest_key(text).unwrap();
        assert_eq!((key.line, key.parts), (3, 4), "{key:?}");
        assert_eq!(key.text, "[t.u.v.w]");
    }

    #[test]
    fn control_characters_are_escaped_and_lines_kept() {
        assert_eq!(printable("a\0b\u{1b}[31m\nc\td"), "a\\0b\\u{1b}[31m\nc\\td");
    }

    #[test]
    fn bad_duration_in_file_says_how_to_write_one() {
        let err = file("idle_timeout = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
    }
}
