//! The command line and the start-up line every peer shares with the epoll
//! example (`examples/epoll_echo.rs`), so that the suite starts each server
//! the same way: `--listen ADDR` (default 127.0.0.1:8001), `--threads N`
//! (default: available parallelism), and `listening on <addr>` on stdout,
//! with the address actually bound, once connections are taken.
//!
//! Also the one size of the per-connection read buffer of the peers that
//! keep one per connection, and the echo of the two peers on tokio's
//! `TcpStream` (the article's server and actix-server), which differ only
//! in how they run it.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Bytes each connection reads into at once, in every peer that keeps a
/// buffer per connection. 4 KiB is what a plain tokio server is usually
/// written with: the article's 512 B would split a 4 KiB message into eight
/// reads and measure the buffer rather than the runtime, and a larger one
/// would be held by every idle connection. One size for all the peers, so
/// that they differ only in their runtime.
pub const BUFFER_SIZE: usize = 4096;

/// Exit status of a bad command line, as tandem's.
pub const EXIT_USAGE: u8 = 2;

/// The options of a peer.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Threads (workers, runtimes) to serve on.
    pub threads: usize,
}

/// Parses the process's arguments.
pub fn parse() -> Result<Args, String> {
    parse_from(std::env::args().skip(1))
}

/// Parses `args` (without the program name).
pub fn parse_from(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let value = value?;
                parsed.listen = value
                    .parse()
                    .map_err(|err| format!("--listen: bad address {value:?}: {err}"))?;
            }
            "--threads" => {
                let value = value?;
                parsed.threads = value
                    .parse()
                    .map_err(|err| format!("--threads: bad number {value:?}: {err}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown argument {arg:?} (expected --listen ADDR, --threads N)"
                ));
            }
        }
    }
    if parsed.threads == 0 {
        return Err("--threads must be at least 1".to_owned());
    }
    Ok(parsed)
}

/// Parses the process's arguments, or says why not on stderr and gives the
/// exit status to return.
pub fn parse_or_exit(program: &str) -> Result<Args, ExitCode> {
    parse().map_err(|why| {
        eprintln!("{program}: {why}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Prints the start-up line and flushes it: the suite waits for it before
/// it loads the server, and stdout is a pipe, so it would otherwise sit in
/// the buffer.
pub fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()
}

/// Echoes until the client's EOF, then closes our side; an I/O error ends
/// the connection silently, as the client has gone. The article's echo,
/// with its defects mended: a buffer of [`BUFFER_SIZE`], nothing appended,
/// no panic on a reset.
pub async fn echo(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUFFER_SIZE];
    loop {
        let read = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(_) => return,
        };
        if stream.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Args, String> {
        parse_from(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn the_defaults_are_the_epoll_examples() {
        let args = parse_strs(&[]).unwrap();
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8001)));
        assert!(args.threads >= 1);
    }

    #[test]
    fn listen_and_threads_are_read() {
        let args = parse_strs(&["--listen", "127.0.0.1:0", "--threads", "3"]).unwrap();
        assert_eq!((args.listen.port(), args.threads), (0, 3));
    }

    #[test]
    fn zero_threads_an_unknown_flag_and_a_missing_value_are_refused() {
        assert!(parse_strs(&["--threads", "0"]).is_err());
        assert!(parse_strs(&["--workers", "2"]).is_err());
        assert!(parse_strs(&["--listen"]).is_err());
    }
}
