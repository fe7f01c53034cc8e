//! The uppercasing protocol of `examples/uppercase`: a handler of your own
//! on tandem's runtimes. The library's tests serve it as well
//! (`tests/library.rs`), so that the example stays correct.

use std::io;

use tandem::{Close, Connection, Handler};

/// Writes back every chunk it reads, in upper case. Echoing chunks rather
/// than whole lines keeps it byte-exact however the client's writes are
/// split; `nc` sends a line at a time anyway.
pub struct Upper;

impl Handler for Upper {
    async fn serve(&self, conn: &mut Connection) -> io::Result<Close> {
        let mut buf = [0; 4096];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                // The client closed its side: close ours too.
                conn.shutdown().await?;
                return Ok(Close::Eof);
            }
            buf[..n].make_ascii_uppercase();
            conn.write_all(&buf[..n]).await?;
        }
    }
}
