//! A TLS identity for the tests (a self-signed certificate from rcgen,
//! written to PEM files for `--tls-cert`/`--tls-key`), and a blocking
//! rustls client that trusts it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::PATIENCE;

/// A client's TLS connection over a blocking socket.
pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A certificate for `localhost`, `127.0.0.1` and `::1`, and its key, in
/// PEM files that live as long as the value.
pub struct Identity {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Identity {
    pub fn new() -> Identity {
        let names = ["localhost", "127.0.0.1", "::1"]
            .map(str::to_owned)
            .to_vec();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        Identity {
            _dir: dir,
            cert,
            key,
            der: certified.cert.der().clone(),
        }
    }

    /// `--tls-cert <cert> --tls-key <key>`.
    pub fn args(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// A client configuration that trusts this certificate only, offering
    /// `versions`.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = tandem::tls::crypto_provider();
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A TLS client over `socket` (already connected, and past whatever it
    /// sent in the clear), its handshake done.
    pub fn handshake(&self, mut socket: TcpStream) -> TlsClient {
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        socket.set_write_timeout(Some(PATIENCE)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn =
            ClientConnection::new(self.client_config(rustls::ALL_VERSIONS), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut socket).expect("TLS handshake");
        }
        StreamOwned::new(conn, socket)
    }

    /// A TLS client connected to `addr`, its handshake done.
    pub fn connect(&self, addr: SocketAddr) -> TlsClient {
        self.handshake(TcpStream::connect(addr).expect("connect to tandem"))
    }
}

/// Writes `payload` in chunks, reading each chunk's echo before the next,
/// and returns everything echoed.
pub fn echo(client: &mut TlsClient, payload: &[u8], chunk: usize) -> Vec<u8> {
    let mut back = Vec::with_capacity(payload.len());
    for piece in payload.chunks(chunk) {
        client.write_all(piece).unwrap();
        client.flush().unwrap();
        let want = back.len() + piece.len();
        let mut buf = vec![0u8; chunk.max(16 * 1024)];
        while back.len() < want {
            let n = client.read(&mut buf).expect("read the echo");
            assert_ne!(n, 0, "the server closed before echoing everything");
            back.extend_from_slice(&buf[..n]);
        }
    }
    back
}

/// Half-closes the client's side (close_notify, then FIN) and reads what
/// is left: `Ok` with the remaining bytes if the server ended its side with
/// a close_notify, `Err` if it only closed the TCP connection (rustls
/// reports that as `UnexpectedEof`: the data may have been cut short).
pub fn half_close(client: &mut TlsClient) -> std::io::Result<Vec<u8>> {
    client.conn.send_close_notify();
    client.flush()?;
    client.sock.shutdown(Shutdown::Write)?;
    read_to_close_notify(client)
}

/// Reads until the server's close_notify, as [`half_close`] does.
pub fn read_to_close_notify(client: &mut TlsClient) -> std::io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    client.read_to_end(&mut rest)?;
    Ok(rest)
}
