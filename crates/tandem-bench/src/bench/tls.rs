//! `tandem bench --tls`: the client side of TLS. Which servers the
//! generator trusts (the system's roots, the certificates of `--tls-ca`, or
//! with `--tls-insecure` any certificate at all), and the name it asks for.
//!
//! The handshake is part of connecting: in the closed and open loops it
//! happens before the window, so the figures are those of the encrypted
//! echo; in churn, every connection makes one, and the latency includes it.
//! Every handshake is a full one unless `--tls-resume` gives the client a
//! session cache, as returning clients have; the report counts both kinds.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::BenchError;
use super::report::Handshakes;
use tandem::transport::Transport;

/// Whom the generator trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The system's root certificates.
    System,
    /// The certificates of a PEM file.
    File(&'a Path),
    /// Any certificate: only the handshake's signatures are checked.
    Anyone,
}

/// What each load connection needs for its handshake, and the count of
/// the run's handshakes. Cheap to clone; clones share the count.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    name: ServerName<'static>,
    full: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
}

impl ClientTls {
    /// A client that trusts `trust` and asks for `name` (SNI, and the name
    /// the certificate must carry), or, without one, for the target's IP
    /// address; with `resume`, it keeps a session cache and resumes.
    pub fn new(
        trust: Trust<'_>,
        name: Option<&str>,
        target: SocketAddr,
        resume: bool,
    ) -> Result<Self, BenchError> {
        let provider = tandem::tls::crypto_provider();
        let invalid = |what: String| BenchError::Tls(what);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid(err.to_string()))?;
        let mut config = match trust {
            Trust::Anyone => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            Trust::File(path) => {
                let mut roots = RootCertStore::empty();
                let certificates =
                    tandem::tls::read_certificates(path).map_err(|err| invalid(err.to_string()))?;
                for certificate in certificates {
                    roots.add(certificate).map_err(|err| {
                        invalid(format!("{}: unusable certificate: {err}", path.display()))
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(invalid(
                        "no system root certificate found; give --tls-ca FILE or --tls-insecure"
                            .to_owned(),
                    ));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        // Without a cache, every handshake is a full one: what a new client
        // costs, rather than what a returning one does.
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let name = match name {
            Some(name) => ServerName::try_from(name.to_owned())
                .map_err(|err| invalid(format!("invalid --tls-server-name {name:?}: {err}")))?,
            None => ServerName::IpAddress(target.ip().into()),
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
            full: Arc::default(),
            resumed: Arc::default(),
        })
    }

    /// Runs the handshake over `stream`, and counts it.
    pub async fn handshake(&self, stream: TcpStream) -> std::io::Result<Transport> {
        let tls = self
            .connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(with_hint)?;
        let counter = match tls.get_ref().1.handshake_kind() {
            Some(HandshakeKind::Resumed) => &self.resumed,
            _ => &self.full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(Transport::Tls(Box::new(tls.into())))
    }

    /// The handshakes completed so far.
    pub fn handshakes(&self) -> Handshakes {
        Handshakes {
            full: self.full.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
        }
    }
}

/// Said when a plain run's first echo is a TLS record: a TLS server
/// answers bytes that are no ClientHello with an alert.
pub(crate) const SPEAKS_TLS_HINT: &str =
    "the server answered with a TLS record: is it serving TLS? try --tls";

/// Whether `echo` begins as a TLS record does: a content type
/// (change_cipher_spec 0x14, alert 0x15, handshake 0x16, application data
/// 0x17), then the major version 3.
pub(crate) fn looks_like_tls(echo: &[u8]) -> bool {
    matches!(echo, [0x14..=0x17, 0x03, ..])
}

/// Adds what to do to the usual first failures against a test server: a
/// refused certificate, and a server that does not speak TLS at all.
fn with_hint(err: std::io::Error) -> std::io::Error {
    let hint = match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        // In words: rustls's own text for some of these is a debug dump.
        Some(rustls::Error::InvalidCertificate(why)) => {
            return std::io::Error::new(
                err.kind(),
                format!(
                    "the server's certificate is not trusted: {} (trust the server's CA or \
                     self-signed certificate with --tls-ca FILE, or accept any with \
                     --tls-insecure; a self-signed certificate must not be marked as a CA: \
                     basicConstraints CA:FALSE)",
                    certificate_problem(why)
                ),
            );
        }
        // A plain echo server sends the ClientHello straight back.
        Some(rustls::Error::InappropriateHandshakeMessage {
            got_type: rustls::HandshakeType::ClientHello,
            ..
        }) => {
            "the server sent the ClientHello back: it does not seem to speak TLS; \
             against a plain server drop --tls, or serve TLS with --tls-cert"
        }
        _ => return err,
    };
    std::io::Error::new(err.kind(), format!("{err} ({hint})"))
}

/// Why a certificate was refused, in words; a reason of the verifier's
/// own (`Other`) keeps its name, which is one word, after them.
fn certificate_problem(why: &rustls::CertificateError) -> String {
    use rustls::CertificateError as Why;
    let words = match why {
        Why::UnknownIssuer => "it is signed by no certificate trusted here",
        Why::BadSignature
        | Why::UnsupportedSignatureAlgorithmContext { .. }
        | Why::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "its signature does not verify against a certificate trusted here"
        }
        Why::NotValidForName | Why::NotValidForNameContext { .. } => {
            "it is not issued for the name asked for (--tls-server-name)"
        }
        Why::Expired | Why::ExpiredContext { .. } => "it has expired",
        Why::NotValidYet | Why::NotValidYetContext { .. } => "it is not valid yet",
        Why::Revoked => "it is revoked",
        Why::InvalidPurpose | Why::InvalidPurposeContext { .. } => {
            "it is not issued for a TLS server"
        }
        Why::BadEncoding => "it is not a well-formed certificate",
        Why::Other(other) => {
            let name = other.to_string();
            let words = if name.contains("CaUsedAsEndEntity") {
                "it is marked as a CA, which a server's own certificate must not be"
            } else {
                "it does not verify"
            };
            return format!("{words} ({name})");
        }
        _ => "it does not verify",
    };
    words.to_owned()
}

/// `--tls-insecure`: accepts whatever certificate the server shows, while
/// still checking that the server holds its key (the handshake signature),
/// so that a broken server still fails.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
