//! The TLS section's certificate: self-signed (rcgen) for `127.0.0.1`,
//! `::1` and `localhost`, made fresh for each suite and written to a
//! private temporary folder, for the servers' `--tls-cert`/`--tls-key` and
//! the load generator's `--tls-ca`. The folder goes when the value does.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::error::SuiteError;

/// A certificate and its key, in PEM files that live as long as the value.
#[derive(Debug)]
pub struct Certificate {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certificate {
    pub fn new() -> Result<Certificate, SuiteError> {
        let names = ["127.0.0.1", "::1", "localhost"]
            .map(str::to_owned)
            .to_vec();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|err| SuiteError::Setup(format!("cannot make a certificate: {err}")))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("tandem-suite-tls-{}-{nanos}", std::process::id()));
        let write_error = |path: &Path| {
            let path = path.to_owned();
            move |cause| SuiteError::Write { path, cause }
        };
        // Only this user may read the key.
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(write_error(&dir))?;
        let certificate = Certificate {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&certificate.cert, certified.cert.pem())
            .map_err(write_error(&certificate.cert))?;
        std::fs::write(&certificate.key, certified.signing_key.serialize_pem())
            .map_err(write_error(&certificate.key))?;
        Ok(certificate)
    }

    /// The certificate's path, as a command-line argument.
    pub fn cert_arg(&self) -> Result<&str, SuiteError> {
        as_arg(&self.cert)
    }

    /// The key's path, as a command-line argument.
    pub fn key_arg(&self) -> Result<&str, SuiteError> {
        as_arg(&self.key)
    }
}

fn as_arg(path: &Path) -> Result<&str, SuiteError> {
    path.to_str()
        .ok_or_else(|| SuiteError::Setup(format!("{} is not UTF-8", path.display())))
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
