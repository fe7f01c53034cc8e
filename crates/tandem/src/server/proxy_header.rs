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
//! once per connection). ppp parses what was read; the v2 TLVs are then
//! checked as HAProxy checks them (see [`check_tlvs`]).
//!
//! Who may send a header at all (`--proxy-protocol-from`) is decided by the
//! worker before this module reads a byte.

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
    check_tlvs(&parsed)?;
    if parsed.command == Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        Addresses::Unix(_) | Addresses::Unspecified => None,
    })
}

/// The TLV types checked beyond their framing, and their limits: the
/// protocol's, and HAProxy's for the authority.
const TLV_AUTHORITY: u8 = 0x02;
const AUTHORITY_LONGEST: usize = 255;
const TLV_CRC32C: u8 = 0x03;
const TLV_UNIQUE_ID: u8 = 0x05;
const UNIQUE_ID_LONGEST: usize = 128;
/// A TLV's type and length, before its value.
const TLV_HEAD: usize = 3;

/// Checks a v2 header's TLVs as HAProxy does: each lies within the header,
/// a CRC32C is 4 bytes and matches the header's checksum, and an authority
/// or a unique ID is no longer than its limit.
fn check_tlvs(parsed: &ppp::v2::Header<'_>) -> Result<(), HeaderError> {
    let malformed = |why: String| Err(HeaderError::Malformed(why));
    let whole = parsed.as_bytes();
    let mut offset = whole.len() - parsed.tlv_bytes().len();
    for tlv in parsed.tlvs() {
        let Ok(tlv) = tlv else {
            return malformed(format!(
                "a TLV at byte {offset} runs past the header's end, byte {}",
                whole.len()
            ));
        };
        let length = tlv.value.len();
        match tlv.kind {
            TLV_CRC32C => {
                let Ok(sent) = <[u8; 4]>::try_from(tlv.value.as_ref()) else {
                    return malformed(format!("a CRC32C TLV of {length} bytes, not 4"));
                };
                let sent = u32::from_be_bytes(sent);
                // The checksum covers the whole header, its own value as
                // zeros.
                let value = offset + TLV_HEAD..offset + TLV_HEAD + 4;
                let mut zeroed = whole.to_vec();
                zeroed[value].fill(0);
                let computed = crc32c::crc32c(&zeroed);
                if sent != computed {
                    return malformed(format!(
                        "the CRC32C TLV says {sent:#010x}, the header's checksum is {computed:#010x}"
                    ));
                }
            }
            TLV_AUTHORITY if length > AUTHORITY_LONGEST => {
                return malformed(format!(
                    "an authority TLV of {length} bytes, more than {AUTHORITY_LONGEST}"
                ));
            }
            TLV_UNIQUE_ID if length > UNIQUE_ID_LONGEST => {
                return malformed(format!(
                    "a unique ID TLV of {length} bytes, more than {UNIQUE_ID_LONGEST}"
                ));
            }
            _ => {}
        }
        offset += TLV_HEAD + length;
    }
    Ok(())
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

    /// A v2 PROXY header for 192.0.2.9:1234 with `tlvs` after its
    /// addresses.
    fn v2_with_tlvs(tlvs: &[(u8, &[u8])]) -> Vec<u8> {
        use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
        let mut builder = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([192, 0, 2, 9], [198, 51, 100, 1], 1234, 7),
        );
        for (kind, value) in tlvs {
            builder = builder.write_tlv(*kind, value).unwrap();
        }
        builder.build().unwrap()
    }

    /// `header` with its CRC32C TLV, which must be last, filled in.
    fn with_checksum(mut header: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&header);
        let end = header.len();
        header[end - 4..].copy_from_slice(&crc.to_be_bytes());
        header
    }

    #[test]
    fn a_v2_header_with_well_formed_tlvs_and_a_right_crc32c_is_read() {
        let header = with_checksum(v2_with_tlvs(&[
            (0x01, b"h2"),
            (TLV_AUTHORITY, b"echo.example"),
            (TLV_CRC32C, &[0; 4]),
        ]));
        assert_eq!(
            parse_v2(&header).unwrap(),
            Some("192.0.2.9:1234".parse().unwrap())
        );
    }

    #[test]
    fn a_wrong_crc32c_is_malformed() {
        let mut header = with_checksum(v2_with_tlvs(&[(TLV_CRC32C, &[0; 4])]));
        let last = header.len() - 1;
        header[last] ^= 1;
        let err = parse_v2(&header).unwrap_err();
        assert!(err.to_string().contains("CRC32C"), "{err}");
        let short = v2_with_tlvs(&[(TLV_CRC32C, &[0; 2])]);
        assert!(matches!(parse_v2(&short), Err(HeaderError::Malformed(_))));
    }

    #[test]
    fn a_tlv_that_runs_past_the_header_is_malformed() {
        let mut header = v2_with_tlvs(&[(0x01, b"h2")]);
        // The ALPN TLV now claims 200 bytes, of the 2 there are.
        let tlv = header.len() - 5;
        header[tlv + 1..tlv + 3].copy_from_slice(&200u16.to_be_bytes());
        let err = parse_v2(&header).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
        // Two bytes left over: too few for a TLV's own type and length.
        let mut leftover = v2_with_tlvs(&[]);
        leftover.extend_from_slice(&[0x01, 0x00]);
        let length = u16::from_be_bytes([leftover[14], leftover[15]]) + 2;
        leftover[14..16].copy_from_slice(&length.to_be_bytes());
        assert!(matches!(
            parse_v2(&leftover),
            Err(HeaderError::Malformed(_))
        ));
    }

    #[test]
    fn an_overlong_authority_or_unique_id_is_malformed() {
        let long = [b'a'; 256];
        assert!(parse_v2(&v2_with_tlvs(&[(TLV_AUTHORITY, &long[..255])])).is_ok());
        assert!(parse_v2(&v2_with_tlvs(&[(TLV_AUTHORITY, &long)])).is_err());
        assert!(parse_v2(&v2_with_tlvs(&[(TLV_UNIQUE_ID, &long[..128])])).is_ok());
        assert!(parse_v2(&v2_with_tlvs(&[(TLV_UNIQUE_ID, &long[..129])])).is_err());
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
