//! The echo protocol (RFC 862), and the article's newline variant done right.
//!
//! Every byte read is written back, in order, before the next read; a
//! half-close from the client is answered with everything owed and then a
//! FIN. The connection borrows a buffer only between a readable socket and
//! the end of the write, so an idle connection holds none, and a client that
//! sends without reading stalls on the write, which stops the reads and lets
//! TCP push back on it. The buffer's size follows the traffic
//! ([`ReadSize`]), up to `buffer_size`.

use std::io;
use std::time::{Duration, Instant};

use crate::buffer::{Buffer, ReadSize};
use crate::connection::{Connection, Event};
use crate::handler::{Close, Handler};

/// How the echo handler behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoConfig {
    /// Largest chunk read, and so echoed, at once: the cap of the read
    /// size, which starts at 4 KiB (or this, if smaller) and grows while
    /// reads fill it.
    pub buffer_size: usize,
    /// Write a `\n` after each chunk read (the behaviour of the article's server).
    pub append_newline: bool,
    /// CPU time burnt per chunk before it is written back: a benchmarking
    /// knob that models handlers doing real work. Zero in production.
    pub simulate_work: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            buffer_size: crate::config::DEFAULT_BUFFER_SIZE,
            append_newline: false,
            simulate_work: Duration::ZERO,
        }
    }
}

/// The echo handler.
#[derive(Debug, Clone)]
pub struct Echo {
    config: EchoConfig,
}

impl Echo {
    /// An echo handler with the given behaviour. A `buffer_size` of 0 is
    /// taken as 1: a read into an empty buffer could not tell data from EOF.
    pub fn new(mut config: EchoConfig) -> Self {
        config.buffer_size = config.buffer_size.max(1);
        Echo { config }
    }

    /// Bytes lent for a read of `read` bytes: room for the newline after a
    /// full read, which is exactly where the article's code wrote past its
    /// data.
    fn lease_len(&self, read: usize) -> usize {
        read + usize::from(self.config.append_newline)
    }
}

impl Handler for Echo {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        let mut size = ReadSize::new(self.config.buffer_size);
        loop {
            match conn.ready().await? {
                Event::Readable => {}
                Event::IdleTimeout => return Ok(Close::IdleTimeout),
                // Everything read so far has been written back (the write
                // finishes before the next read), so all that is owed is the
                // FIN.
                Event::Shutdown => {
                    conn.shutdown().await?;
                    return Ok(Close::Shutdown);
                }
            }
            let asked = size.next();
            let mut buf = Buffer::lease(self.lease_len(asked));
            let read = match conn.try_read(&mut buf[..asked]) {
                Ok(0) => {
                    conn.shutdown().await?;
                    return Ok(Close::Eof);
                }
                Ok(read) => {
                    size.record(read);
                    read
                }
                // Readiness was stale; the lease goes back before waiting.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            };
            if !self.config.simulate_work.is_zero() {
                burn_cpu(self.config.simulate_work);
            }
            let len = if self.config.append_newline {
                buf[read] = b'\n';
                read + 1
            } else {
                read
            };
            conn.write_all(&buf[..len]).await?;
        }
    }
}

/// Keeps the current thread busy for `work`, as a CPU-bound handler would:
/// the worker thread can do nothing else meanwhile, which is the point.
fn burn_cpu(work: Duration) {
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}
