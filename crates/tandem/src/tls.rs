//! TLS on the serving side (`--tls-cert`, `--tls-key`): the server's
//! identity, loaded from PEM files into a rustls configuration, and the
//! handshake.
//!
//! The handshake runs on the serving runtime, in the connection's own task,
//! like every other byte of the connection: the acceptor only accepts. It
//! runs under a timeout, so that a client that connects and never
//! completes it (or never starts) holds its slot for that long at most.
//! rustls does the protocol with the provider of [`crypto_provider`]: the
//! one the application installed, else `ring`; TLS 1.2 and 1.3, safe
//! defaults only, no client certificates.
//!
//! An identity read from PEM files can be read again
//! ([`ServerTls::reload`], `SIGHUP` in `tandem serve`): the new certificate
//! and key serve every handshake from then on, live connections keep the
//! one they were made with, and files that do not load leave the current
//! identity in place.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::file::FileError;
use crate::metrics::TlsHandshakeError;
use crate::transport::Transport;

/// The cryptography rustls uses, for the server and for clients that
/// talk to it: the provider the application installed for the process
/// ([`CryptoProvider::install_default`], `aws-lc-rs`'s for post-quantum key
/// exchange, say), else `ring`'s, which this crate builds with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    if let Some(installed) = CryptoProvider::get_default() {
        return installed.clone();
    }
    // rustls 0.23.48 deprecates ring's provider because ring has no
    // post-quantum key exchange, and offers no other way to build it (its
    // random source and key loader are private; `ServerConfig::builder()`
    // would reach it but panics when a dependent's build enables both ring
    // and aws-lc-rs). ring stays, as the provider that needs no C
    // toolchain; an application that wants post-quantum key exchange
    // installs its own provider, which comes first above.
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    Arc::new(ring)
}

/// How long a client may take over the TLS handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate or key could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The file could not be read: missing, unreadable, not a regular
    /// file, or over [`file::MAX_SIZE`](crate::file::MAX_SIZE).
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why not.
        cause: FileError,
    },
    /// The file is not PEM, or holds nothing of the kind expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The identity was given as a rustls configuration, not read from
    /// files: there is nothing to read again.
    #[error("the TLS identity was not read from files, so it cannot be reloaded")]
    NotFromFiles,
    /// rustls refused the certificate chain and key together (a key that
    /// does not match the certificate, an unsupported key type).
    #[error("certificate {cert} and key {key} are unusable together: {cause}")]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        cause: rustls::Error,
    },
}

impl TlsError {
    fn rejected(cert: &Path, key: &Path, cause: rustls::Error) -> TlsError {
        TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cause,
        }
    }
}

/// What a server needs to speak TLS: its rustls configuration and the
/// handshake timeout. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    /// The files the identity came from, when it came from files: what
    /// [`reload`](Self::reload) reads again.
    identity: Option<Arc<PemIdentity>>,
}

/// A certificate chain and key read from PEM files, the one every handshake
/// is given until the files are read again.
#[derive(Debug)]
struct PemIdentity {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl PemIdentity {
    /// Reads the files: the chain, the key, and that they belong together.
    fn load(
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = read_certificates(cert)?;
        let private_key = read_pem(key, PrivateKeyDer::from_pem_slice)?;
        CertifiedKey::from_der(chain, private_key, provider)
            .map(Arc::new)
            .map_err(|cause| TlsError::rejected(cert, key, cause))
    }
}

impl ResolvesServerCert for PemIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves with `config` as it is (certificates, ALPN, client
    /// authentication: the caller's choice).
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            identity: None,
        }
    }

    /// Serves the certificate chain in `cert` (PEM, the server's own
    /// certificate first) with the private key in `key` (PEM: PKCS#8,
    /// PKCS#1 or SEC1).
    /// These files can be read again with [`reload`](Self::reload).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = crypto_provider();
        let identity = Arc::new(PemIdentity {
            current: RwLock::new(PemIdentity::load(cert, key, &provider)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider: provider.clone(),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|cause| TlsError::rejected(cert, key, cause))?
            .with_no_client_auth()
            .with_cert_resolver(identity.clone());
        Ok(ServerTls {
            identity: Some(identity),
            ..ServerTls::new(Arc::new(config))
        })
    }

    /// Reads the certificate and key files again: every handshake from now
    /// on gets the new identity, and live connections keep theirs. If the
    /// files do not load, the current identity stays and the error says
    /// why. Every clone of this `ServerTls` (the server's among them) sees
    /// the new identity. A `ServerTls` made with [`new`](Self::new) has no
    /// files, and [`TlsError::NotFromFiles`] says so.
    pub fn reload(&self) -> Result<(), TlsError> {
        let identity = self.identity.as_ref().ok_or(TlsError::NotFromFiles)?;
        let fresh = PemIdentity::load(&identity.cert, &identity.key, &identity.provider)?;
        *identity
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Sets how long a client may take over the handshake, from the start
    /// of serving (after the PROXY header, if one is required).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client may take over the handshake: the last
    /// [`with_handshake_timeout`](Self::with_handshake_timeout),
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] unless set.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the handshake on `stream` within the timeout.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Result<Transport, HandshakeError> {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(Transport::Tls(Box::new(tls.into()))),
            Ok(Err(err)) => Err(HandshakeError::Failed(err)),
            Err(_) => Err(HandshakeError::Timeout),
        }
    }
}

/// The certificates of a PEM file, in order; at least one (a server's
/// chain, or the roots a client trusts).
#[doc(hidden)]
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = read_pem(path, |pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
    })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE section".to_owned(),
        });
    }
    Ok(certificates)
}

/// Reads `path` and parses it with `parse`, naming the file in errors.
fn read_pem<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, TlsError> {
    let pem = crate::file::read_small(path).map_err(|cause| TlsError::Read {
        path: path.to_owned(),
        cause,
    })?;
    parse(&pem).map_err(|err| TlsError::Pem {
        path: path.to_owned(),
        what: match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM section of the expected kind".to_owned()
            }
            other => format!("not valid PEM: {other}"),
        },
    })
}

/// Why a handshake did not complete.
#[derive(Debug, Error)]
pub(crate) enum HandshakeError {
    /// Not done within the handshake timeout.
    #[error("no TLS handshake within the timeout")]
    Timeout,
    /// The peer closed, sent something that is not TLS, or failed it.
    #[error("TLS handshake failed: {0}")]
    Failed(io::Error),
}

impl HandshakeError {
    /// Its kind in `tandem_tls_handshake_errors_total`.
    pub(crate) fn kind(&self) -> TlsHandshakeError {
        use io::ErrorKind::{
            BrokenPipe, ConnectionAborted, ConnectionReset, InvalidData, UnexpectedEof,
        };
        match self {
            HandshakeError::Timeout => TlsHandshakeError::Timeout,
            // tokio-rustls reports rustls's refusals as InvalidData: not
            // TLS at all, no common version or cipher suite, a bad message.
            HandshakeError::Failed(err) if err.kind() == InvalidData => TlsHandshakeError::Protocol,
            HandshakeError::Failed(err)
                if matches!(
                    err.kind(),
                    UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
                ) =>
            {
                TlsHandshakeError::Closed
            }
            HandshakeError::Failed(_) => TlsHandshakeError::Error,
        }
    }
}
