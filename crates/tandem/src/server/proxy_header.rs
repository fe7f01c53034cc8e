//! `--proxy-protocol`: the PROXY protocol header (v1 text or v2 binary, as
//! HAProxy's `send-proxy` and `send-proxy-v2` write it) that a load
//! balancer puts in front of each connection, naming the client it
//! accepted.
//!
//! The header is read on the serving runtime, like every other byte of the
//! connection, and exactly: not one byte past its end, so that what
//! follows reaches the handler untouched. A v2 header says its own length
//! after 16 bytes; a v1 header ends at the first CRLF, at most 107 bytes in,
//! and is read a byte at a time after its first 15 (one small read per byte,
//! once per connection). ppp parses what was read.

use std::io;
use std::net::SocketAddr;

use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::ProxyHeaderError;

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The shortest header of either version: `PROXY UNKNOWN\r\n`.
const SHORTEST: usize = 15;
/// The longest v1 header, CRLF included (the protocol's own limit).
const V1_LONGEST: usize = 107;
/// The longest v2 header accepted: the fixed part and 2 KiB of addresses
/// and TLVs, far more than any load balancer sends, so that a bogus length
/// cannot make the server wait for, or hold, 64 KiB per connection.
const V2_LONGEST: usize = 16 + 2048;

/// Why a connection's header was refused.
#[derive(Debug, Error)]
pub(crate) enum HeaderError {
    /// The peer closed before a whole header arrived.
    #[error("connection closed before a whole PROXY header")]
    Closed,
    /// What arrived is not a PROXY header.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(io::Error),
}

impl HeaderError {
    /// Its kind in `tandem_proxy_header_errors_total`.
    pub(crate) fn kind(&self) -> ProxyHeaderError {
        match self {
            HeaderError::Closed => ProxyHeaderError::Closed,
            HeaderError::Malformed(_) => ProxyHeaderError::Malformed,
            HeaderError::Io(_) => ProxyHeaderError::Error,
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            HeaderError::Closed
        } else {
            HeaderError::Io(err)
        }
    }
}

/// Reads the header at the start of `stream` and returns the client it
/// names: `None` when it names none (v1 `UNKNOWN`, v2 `LOCAL`, as a load
/// balancer's own health checks send, or a non-IP family), in which case
/// the connection's own peer stands.
pub(crate) async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut header = vec![0u8; SHORTEST];
    // Bytes as they come, never past the shortest header: the moment they
    // cannot begin one, the connection is refused, not held until the
    // timeout.
    let mut filled = 0;
    while filled < SHORTEST {
        let read = stream.read(&mut header[filled..]).await?;
        if read == 0 {
            return Err(HeaderError::Closed);
        }
        filled += read;
        if !could_begin_a_header(&header[..filled]) {
            return Err(HeaderError::Malformed(
                "neither a v1 (`PROXY ...`) nor a v2 signature".to_owned(),
            ));
        }
    }
    if header.starts_with(&V2_SIGNATURE[..]) {
        header.resize(16, 0);
        stream.read_exact(&mut header[SHORTEST..]).await?;
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if 16 + length > V2_LONGEST {
            return Err(HeaderError::Malformed(format!(
                "a v2 header of {} bytes, more than the {V2_LONGEST} accepted",
                16 + length
            )));
        }
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await?;
        return parse_v2(&header);
    }
    // Not v2, and `could_begin_a_header` saw its start: a v1 header.
    while !header.ends_with(b"\r\n") {
        if header.len() == V1_LONGEST {
            return Err(HeaderError::Malformed(format!(
                "no CRLF within the {V1_LONGEST} bytes a v1 header may take"
            )));
        }
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await?;
        header.push(byte[0]);
    }
    parse_v1(&header)
}

/// True while `start` may still be the beginning of a v1 or v2 header.
fn could_begin_a_header(start: &[u8]) -> bool {
    let prefix_of = |signature: &[u8]| {
        let shared = start.len().min(signature.len());
        start[..shared] == signature[..shared]
    };
    [
        &b"PROXY TCP4 "[..],
        b"PROXY TCP6 ",
        b"PROXY UNKNOWN",
        V2_SIGNATURE,
    ]
    .into_iter()
    .any(prefix_of)
}

fn parse_v2(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let parsed = Header::try_from(header).map_err(|err| HeaderError::Malformed(err.to_string()))?;
    if parsed.command == Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::Unix(_) | Addresses::Unspecified => None,
    })
}

fn parse_v1(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let parsed = Header::try_from(header).map_err(|err| HeaderError::Malformed(err.to_string()))?;
    Ok(match parsed.addresses {
        Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_cannot_begin_a_header_are_told_at_once() {
        for start in [
            &b"PRO"[..],
            b"PROXY TCP4",
            b"\r\n\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x21",
        ] {
            assert!(could_begin_a_header(start), "{start:?}");
        }
        for start in [
            &b"G"[..],
            b"GET / HTTP/1.1",
            b"PROXYZ",
            b"PROXY TCP5",
            b"\r\n\r\nX",
        ] {
            assert!(!could_begin_a_header(start), "{start:?}");
        }
    }

    #[test]
    fn a_v1_header_names_its_source() {
        let header = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        assert_eq!(
            parse_v1(header).unwrap(),
            Some("192.0.2.1:56324".parse().unwrap())
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";
        assert_eq!(
            parse_v1(v6).unwrap(),
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
    }

    #[test]
    fn a_v2_header_names_its_source_and_local_names_none() {
        use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
        let proxied = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([192, 0, 2, 9], [198, 51, 100, 1], 1234, 7),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse_v2(&proxied).unwrap(),
            Some("192.0.2.9:1234".parse().unwrap())
        );
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Stream,
            IPv4::new([192, 0, 2, 9], [198, 51, 100, 1], 1234, 7),
        )
        .build()
        .unwrap();
        assert_eq!(parse_v2(&local).unwrap(), None);
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse_v1(b"PROXY TCP4 not an address\r\n"),
            Err(HeaderError::Malformed(_))
        ));
        assert!(matches!(
            parse_v2(b"\r\n\r\n\0\r\nQUIT\n\x99\x11\0\0"),
            Err(HeaderError::Malformed(_))
        ));
    }
}
