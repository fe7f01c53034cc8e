//! A protocol of your own on tandem's runtimes: every line comes back in
//! upper case.
//!
//! ```sh
//! cargo run -p tandem --example uppercase          # listens on 127.0.0.1:7000
//! nc 127.0.0.1 7000                                # type a line, get it back
//! ```
//!
//! Ctrl-C stops accepting, lets open connections finish for up to 5 s, and
//! prints how many were drained and how many were cut. The handler moves
//! bytes only through the connection's own methods, so the idle rule
//! (5 minutes of silence) and the shutdown cut hold without its help.

use std::io;
use std::time::Duration;

use tandem::{Server, ServerConfig};
use tokio_util::sync::CancellationToken;
use upper::Upper;

// The handler, in a file of its own: the library's tests serve it too.
mod upper;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_owned())
        .parse()?;
    let listener = tandem::server::bind(addr, 1024)?;
    println!("uppercasing on {}", listener.local_addr()?);

    // Ctrl-C cancels the token; the server's shutdown waits on it.
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    ctrlc_thread(move || on_signal.cancel())?;

    let config = ServerConfig::default().shutdown_timeout(Duration::from_secs(5));
    let report = Server::new(config).run(listener, Upper, stop.cancelled_owned())?;
    println!("stopped: {} drained, {} cut", report.drained, report.cut);
    Ok(())
}

/// Calls `on_signal` once SIGINT arrives, from a thread of its own with a
/// small runtime, since the server's own runtimes are not running yet.
fn ctrlc_thread(on_signal: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("ctrl-c".to_owned())
        .spawn(move || {
            if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
                on_signal();
            }
        })?;
    Ok(())
}
