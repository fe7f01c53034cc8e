//! The article's starting point, written fresh: one multi-thread tokio
//! runtime that accepts and serves, a spawned task per connection, `read`
//! then `write_all`. It is what `#[tokio::main]` gives, and the baseline
//! tandem's `single` layout stands for; here it is the real thing, with
//! nothing of tandem's (no idle rule, no connection limit, no metrics).
//!
//! Departures from the article's listing, each so that the comparison
//! measures the runtime and not a mistake: a 4 KiB buffer instead of
//! 512 B (see `peer_args::BUFFER_SIZE`); no newline appended to each echo
//! (the suite's load checks plain echoes); TCP_NODELAY, as every server of
//! the comparison sets it; I/O errors end the connection instead of
//! panicking the task; and EOF closes our side once all is echoed.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml -p peer-article -- --listen 127.0.0.1:0
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT`; `nc 127.0.0.1 PORT` echoes what
//! is typed. SIGTERM or SIGINT stops it with exit status 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Pause before accepting again after a failed accept: EMFILE and the like
/// would fail again at once, and the loop would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let args = match peer_args::parse_or_exit("peer-article") {
        Ok(args) => args,
        Err(status) => return status,
    };
    // What `#[tokio::main]` expands to, written out: the attribute takes
    // its thread count only as a literal, and the suite gives every server
    // its count on the command line.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("peer-article: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("peer-article: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts until SIGTERM or SIGINT, a task per connection.
async fn serve(listen: SocketAddr) -> Result<(), String> {
    // Registered before the address is printed, so that a signal sent as
    // soon as it is read still ends the process cleanly.
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|err| format!("SIGTERM handler: {err}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|err| format!("SIGINT handler: {err}"))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    let bound = listener
        .local_addr()
        .map_err(|err| format!("cannot read the bound address: {err}"))?;
    peer_args::announce(bound).map_err(|err| format!("cannot write to stdout: {err}"))?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(peer_args::echo(stream));
                }
                Err(err) => {
                    eprintln!("peer-article: accept: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
        }
    }
}
