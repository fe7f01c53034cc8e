//! The `tandem` binary: parses the command line, sets up logging and
//! signals, binds, and hands over to the library.
//!
//! Exit codes: 0 after a clean shutdown, 2 for an invalid configuration
//! (an address the host cannot listen on included), 1 for a failure at run
//! time, 128 + the signal number when a second signal cuts a graceful
//! shutdown short.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tandem::server::Running;
use tandem::{Compute, Echo, Server, ServerTls};
use tandem_bench::bench::BenchOptions;
use tandem_bench::suite::SuiteOptions;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

use tandem_cli::config::{self, ConfigError, LogFormat, OptionName, ServeConfig, ServeOptions};
use tandem_cli::startup::StartupLine;

#[cfg(all(feature = "console", not(tokio_unstable)))]
compile_error!(
    "the `console` feature needs tokio's unstable API: build with RUSTFLAGS=\"--cfg tokio_unstable\" (see the README)"
);

/// The process's allocator. tokio aligns each task and each socket's
/// reactor record to 128 bytes, and glibc's malloc serves an aligned
/// request by carving a larger chunk and freeing the ends, fragments that
/// mostly stay unused: about 230 of the 1,000 bytes an idle connection
/// costs under glibc. mimalloc's size classes are aligned to their size,
/// so the same connection costs about 770 (BENCHMARKS.md). The library
/// leaves the choice to the program that embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A TCP echo server built on split Tokio runtimes.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo server.
    #[command(mut_args = config::env_named_after_flag)]
    Serve(ServeOptions),
    /// Load an echo server and measure it, checking every byte.
    #[command(mut_args = config::bench_env_named_after_flag)]
    Bench(BenchOptions),
    /// Compare the layouts and the epoll reference over a matrix of loads.
    Suite(SuiteOptions),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return command_line_refused(err),
    };
    match cli.command {
        Command::Serve(options) => serve(options),
        Command::Bench(options) => bench(&options),
        Command::Suite(options) => suite(&options),
    }
}

/// clap's refusal of the command line (exit status 2), or the help or
/// version asked for (0), with two additions to a refusal: a value that
/// came from an environment variable names it, where clap names only the
/// flag; and control characters are escaped.
fn command_line_refused(mut err: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    if let Some(variable) = variable_behind(&err) {
        err.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                format!("the value comes from the environment variable {variable}").into(),
            ]),
        );
    }
    eprint!("{}", config::printable(&err.render().to_string()));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// The environment variable a refused value came from: the refused flag's
/// variable, when it holds that value and the flag is not on the command
/// line.
fn variable_behind(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        err.get(ContextKind::InvalidArg),
        err.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    // clap names the argument as `--workers <N>`.
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let flag = format!("--{long}");
    let on_command_line = std::env::args_os().skip(1).any(|given| {
        given.to_str().is_some_and(|given| {
            given == flag
                || given
                    .strip_prefix(&flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    });
    if on_command_line {
        return None;
    }
    Cli::command()
        .get_subcommands()
        .flat_map(clap::Command::get_arguments)
        .filter(|candidate| candidate.get_long() == Some(long))
        .filter_map(|candidate| candidate.get_env())
        .find(|env| std::env::var_os(env).is_some_and(|set| set.to_string_lossy() == *value))
        .map(|env| env.to_string_lossy().into_owned())
}

fn suite(options: &SuiteOptions) -> ExitCode {
    match tandem_bench::suite::run(options) {
        Ok(dir) => {
            println!("results in {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("tandem: {err}");
            match err {
                // Refused before anything ran, as bad flags are.
                tandem_bench::suite::SuiteError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn bench(options: &BenchOptions) -> ExitCode {
    if let Err(err) = options.validate() {
        eprintln!("tandem: {err}");
        return ExitCode::from(2);
    }
    let report = match tandem_bench::bench::run(options, !options.json) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("tandem: {err}");
            return ExitCode::FAILURE;
        }
    };
    let printed = if options.json {
        serde_json::to_string(&report).map(|json| println!("{json}"))
    } else {
        print!("{report}");
        Ok(())
    };
    if let Err(err) = printed {
        eprintln!("tandem: cannot write the report: {err}");
        return ExitCode::FAILURE;
    }
    if report.errors > 0 {
        eprintln!(
            "tandem: {} connection(s) failed; first: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("unknown")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve(options: ServeOptions) -> ExitCode {
    let config = match options.resolve() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("tandem: {}", config::printable(&err.to_string()));
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    for unknown in config::unknown_variables(std::env::vars_os()) {
        warn!(variable = %unknown.name, "{unknown}");
    }
    for warning in config.warnings() {
        warn!("{warning}");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{}", config::printable(&format!("{err:#}")));
            // An address that cannot be bound here at all is refused as an
            // invalid option is.
            if err.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG`; built with the `console`
/// feature, also serves tokio-console (its own filter, so `RUST_LOG` does
/// not hide the runtime's task events from it).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(lines.with_filter(filter));
    #[cfg(feature = "console")]
    let registry = registry.with(console_subscriber::spawn());
    registry.init();
}

/// Binds the first address `--listen` stands for that can be bound (a
/// name may resolve to an IPv6 address on a host without IPv6); the error
/// of the last one otherwise.
fn bind_first(config: &ServeConfig) -> anyhow::Result<TcpListener> {
    let options = tandem::server::ListenOptions {
        backlog: config.backlog,
        reuse_port: config.reuse_port,
    };
    let mut failed = None;
    for &addr in &config.listen_resolved {
        match tandem::server::bind_with(addr, options) {
            Ok(listener) => return Ok(listener),
            Err(err) => failed = Some(err),
        }
    }
    Err(failed.map_or_else(
        || anyhow::anyhow!("no address to listen on"),
        |err| refused_address("listen", err),
    ))
}

/// A bind error for an address this host cannot listen on at all (not one
/// of its own, EADDRNOTAVAIL; one the socket cannot take, EINVAL; a family
/// it lacks, EAFNOSUPPORT) is the option's fault, and is reported as an
/// invalid option (exit status 2), naming it. An address in use, or out
/// of descriptors, is a failure at run time (1).
fn refused_address(option: &'static str, err: tandem::server::ServerError) -> anyhow::Error {
    use std::io::ErrorKind;
    match err {
        tandem::server::ServerError::Listen { addr, cause }
            if matches!(
                cause.kind(),
                ErrorKind::AddrNotAvailable | ErrorKind::InvalidInput | ErrorKind::Unsupported
            ) =>
        {
            ConfigError::Invalid {
                option: OptionName(option),
                rule: format!("cannot be listened on here ({cause})"),
                value: addr.to_string(),
            }
            .into()
        }
        err => err.into(),
    }
}

/// Listen backlog of the admin endpoint: scrapers and probes, a handful.
const ADMIN_BACKLOG: u32 = 64;

fn run(config: ServeConfig) -> anyhow::Result<()> {
    // Before the `listening on` line: a supervisor may signal as soon as it
    // reads it, and the default action of SIGTERM skips the graceful path.
    let shutdown = watch_signals(config.tls.clone())?;
    let listener = listener(&config)?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Bound before the start-up line, so that it states the port taken.
    let admin = admin_listener(config.admin_listen)?;
    let admin_addr = admin
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("cannot read the admin endpoint's bound address")?;
    StartupLine::new(&config, addr, admin_addr)
        .context("cannot state the configuration")?
        .log();
    let running = start(config, listener, admin, addr)?;
    announce(&running, addr);
    let report = running.wait(stopping(shutdown))?;
    info!(
        live = report.live,
        drained = report.drained,
        cut = report.cut,
        "shutdown complete"
    );
    Ok(())
}

/// The socket a service manager passed, or else `--listen` bound.
fn listener(config: &ServeConfig) -> anyhow::Result<TcpListener> {
    match tandem::server::inherited()? {
        Some(listener) => {
            info!(
                "serving the socket passed by the service manager; --listen, --backlog and --reuse-port do not apply"
            );
            Ok(listener)
        }
        None => bind_first(config),
    }
}

/// The admin endpoint's listener, with `--admin-listen`.
fn admin_listener(admin: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(admin) = admin else {
        return Ok(None);
    };
    tandem::server::bind(admin, ADMIN_BACKLOG)
        .map(Some)
        .map_err(|err| match refused_address("admin_listen", err) {
            refused if refused.is::<ConfigError>() => refused,
            failed => failed.context("cannot start the admin listener (--admin-listen)"),
        })
}

/// Starts serving the echo on `listener` (bound to `addr`), with the
/// compute runtime, TLS, the admin endpoint and UDP as configured.
fn start(
    config: ServeConfig,
    listener: TcpListener,
    admin: Option<TcpListener>,
    addr: SocketAddr,
) -> anyhow::Result<Running<Echo>> {
    // The article's runtime for heavy work, beside the serving runtimes:
    // the echo sends it work, the server reports and stops it.
    let compute = Compute::start(&config.compute)?;
    let mut server = Server::new(config.server).compute(compute.clone());
    if let Some(tls) = config.tls {
        server = server.tls(tls);
    }
    if let Some(admin) = admin {
        server = server.admin(admin);
    }
    if let Some(rate_limit) = config.udp_rate_limit {
        // The TCP listener's address, its port resolved.
        server = server.udp(tandem::server::bind_udp(addr)?, rate_limit);
    }
    Ok(server.start(listener, Echo::new(config.echo).compute(compute))?)
}

/// Says that the server serves: in the log, on stdout and to the service
/// manager.
fn announce(running: &Running<Echo>, addr: SocketAddr) {
    if let Some(udp) = running.udp_addr() {
        info!(udp = %udp, "echoing UDP datagrams too");
    }
    // The first line on stdout, printed once connections are being served:
    // the contract scripts rely on to learn the port.
    let mut lines = vec![format!("listening on {addr}")];
    if let Some(admin) = running.admin_addr() {
        info!(admin = %admin, "admin endpoint serving /metrics, /healthz and /readyz");
        lines.push(format!("admin listening on {admin}"));
    }
    let mut stdout = std::io::stdout();
    for line in lines {
        if let Err(err) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            warn!(cause = %err, "cannot write to stdout");
        }
    }
    // Under systemd (`Type=notify`): ready once serving, stopping from the
    // first signal. Without NOTIFY_SOCKET these do nothing.
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving on {addr}")),
    ]);
}

/// Completes at the first signal, once the service manager is told that
/// the server is stopping.
async fn stopping(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
}

/// Tells the service manager about a change of state, if one listens.
fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        warn!(cause = %err, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Handles the signals an operator or a service manager sends:
/// - SIGTERM, SIGINT and SIGQUIT: the first cancels the returned token (a
///   graceful shutdown), the second exits at once;
/// - SIGHUP: reads the TLS certificate and key again (`tls`), keeping the
///   current ones if the new files do not load; without TLS, says there is
///   nothing to reload;
/// - SIGUSR1: logs that there is no log file to reopen (tandem logs to
///   stderr, which the service manager keeps), and goes on.
fn watch_signals(tls: Option<ServerTls>) -> anyhow::Result<CancellationToken> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])
        .context("cannot install the signal handlers")?;
    let token = CancellationToken::new();
    let shutdown = token.clone();
    std::thread::Builder::new()
        .name("tandem-signals".to_owned())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload_tls(tls.as_ref()),
                    SIGUSR1 => info!(
                        signal = signal_name(signal),
                        "no log file to reopen: tandem logs to stderr; going on"
                    ),
                    _ if !stopping => {
                        stopping = true;
                        info!(signal = signal_name(signal), "shutting down gracefully");
                        shutdown.cancel();
                    }
                    _ => {
                        warn!(
                            signal = signal_name(signal),
                            "second signal; exiting without waiting for connections"
                        );
                        std::process::exit(128 + signal);
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(token)
}

/// SIGHUP: the TLS identity read again from its files.
fn reload_tls(tls: Option<&ServerTls>) {
    match tls.map(ServerTls::reload) {
        None => info!(signal = "SIGHUP", "no TLS identity to reload; going on"),
        Some(Ok(())) => info!(
            signal = "SIGHUP",
            "reloaded the TLS certificate and key; new handshakes use them"
        ),
        Some(Err(err)) => warn!(
            signal = "SIGHUP",
            cause = %err,
            "cannot reload the TLS certificate and key; keeping the current ones"
        ),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        _ => "signal",
    }
}
