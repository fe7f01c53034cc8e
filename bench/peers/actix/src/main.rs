//! An echo server on actix-server: its accept thread deals connections to
//! `--threads` workers, each a single-thread runtime of its own on a
//! thread of its own (the model of tandem's `sharded` layout). The service
//! is an `fn_service` over tokio's `TcpStream`: `read`, then `write_all`.
//!
//! ```text
//! cargo run --release --manifest-path bench/peers/Cargo.toml -p peer-actix -- --listen 127.0.0.1:0
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT`; `nc 127.0.0.1 PORT` echoes what
//! is typed. SIGTERM or SIGINT stops it with exit status 0.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use actix_rt::net::TcpStream;
use actix_rt::signal::unix::{SignalKind, signal};
use actix_server::Server;
use actix_service::fn_service;
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog: the epoll example's and tandem's default, so that 1000
/// clients connecting at once meet the same queue everywhere.
const BACKLOG: i32 = 1024;
/// Seconds the workers may finish their connections after a signal. The
/// suite stops a server only once its load has ended, so there is nothing
/// to wait for; actix's default of 30 s would only hold up the next sample
/// if a client were left over.
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;

fn main() -> ExitCode {
    let args = match peer_args::parse_or_exit("peer-actix") {
        Ok(args) => args,
        Err(status) => return status,
    };
    // Bound here rather than by actix's `bind`, which would not tell the
    // port it picked for port 0.
    let listener = match bind(args.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("peer-actix: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match actix_rt::System::new().block_on(serve(listener, args.threads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("peer-actix: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A listening socket on `addr`.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

async fn serve(listener: std::net::TcpListener, workers: usize) -> io::Result<()> {
    let bound = listener.local_addr()?;
    // actix-server installs its own handlers only when the server is first
    // polled, after the address is printed: a signal sent as soon as it is
    // read would kill the process instead. These are in place before.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stopped = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let server = Server::build()
        .workers(workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .shutdown_signal(stopped)
        .listen("echo", listener, || {
            fn_service(|stream: TcpStream| async move {
                peer_args::echo(stream).await;
                Ok::<(), io::Error>(())
            })
        })?
        .run();
    peer_args::announce(bound)?;
    server.await
}
