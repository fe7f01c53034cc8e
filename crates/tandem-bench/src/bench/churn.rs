//! Churn: every request on a new connection (connect, send, receive, close),
//! measuring connects per second and the latency from the start of the
//! connect to the last byte of the first echo.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::client::{close, connect};
use super::pattern::{APPEND_NEWLINE_HINT, Block, Newlines, Pattern, Verifier};
use super::stats::{Recorder, Stats};
use super::tls::{self, ClientTls, SPEAKS_TLS_HINT};

/// One churning worker: opens, uses and closes connections one after
/// another until the window ends. `ids` numbers the connections of the run.
/// With `tls`, every connection makes a handshake, timed with the rest.
pub async fn churn(
    target: SocketAddr,
    tls: Option<&ClientTls>,
    block: &Block,
    message_size: usize,
    stats: &Stats,
    ids: &AtomicU64,
    skip_newlines: bool,
) {
    let end = Instant::from_std(stats.measure_until);
    let mut recorder = Recorder::new(stats);
    let mut outbound = vec![0u8; message_size];
    let mut inbound = vec![0u8; message_size.max(4096)];
    while Instant::now() < end {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let pattern = block.pattern(id, message_size);
        let started = Instant::now();
        // A server that accepts and then goes silent must not hold the run.
        let deadline = started.max(end) + super::client::DRAIN_TIMEOUT;
        let attempt = request(
            target,
            tls,
            pattern,
            &mut outbound,
            &mut inbound,
            skip_newlines,
        );
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) if skip_newlines => Err(format!(
                "no echo, or no newline after it, before the run's deadline: {APPEND_NEWLINE_HINT}"
            )),
            Err(_) => Err("no echo before the run's deadline".to_owned()),
        };
        match result {
            Ok(echoed) => {
                if stats.in_window(started.into_std()) {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                }
                recorder.record(started.into_std(), echoed.into_std(), message_size);
            }
            Err(what) => {
                stats.error(what);
                // Refused or reset: do not hammer a server that is down.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// One request on a connection of its own: connect (with `tls`, through the
/// handshake), send message 0 of `pattern`, check its echo, close. Returns
/// when the echo was complete.
async fn request(
    target: SocketAddr,
    tls: Option<&ClientTls>,
    pattern: Pattern,
    outbound: &mut [u8],
    inbound: &mut [u8],
    skip_newlines: bool,
) -> Result<Instant, String> {
    let mut stream = connect(target, tls)
        .await
        .map_err(|err| format!("connect to {target} failed: {err}"))?;
    pattern.write(0, outbound);
    // The flush pushes out what TLS holds back.
    let written = async {
        stream.write_all(outbound).await?;
        stream.flush().await
    };
    written
        .await
        .map_err(|err| format!("write failed: {err}"))?;
    // One request per connection: its newline must follow it.
    let newlines = if skip_newlines {
        Newlines::AfterEach
    } else {
        Newlines::None
    };
    let mut verifier = Verifier::new(pattern, newlines);
    while verifier.completed() == 0 {
        let read = stream
            .read(inbound)
            .await
            .map_err(|err| format!("read failed: {err}"))?;
        if read == 0 {
            return Err("server closed before echoing".to_owned());
        }
        verifier.check(&inbound[..read]).map_err(|_| {
            if tls::looks_like_tls(&inbound[..read]) {
                format!("echo differs from what was sent ({SPEAKS_TLS_HINT})")
            } else {
                "echo differs from what was sent".to_owned()
            }
        })?;
    }
    let echoed = Instant::now();
    close(stream, &mut verifier, inbound).await?;
    Ok(echoed)
}
