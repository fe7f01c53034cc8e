//! The files a server is configured from (its TLS certificate and key, a
//! configuration file): small regular files, read with a bound.
//!
//! A path given by mistake must fail at once with a clear reason, never
//! read without end (`/dev/zero`), block for ever (a FIFO with no writer)
//! or take all memory (a file of gigabytes). So the file is opened without
//! waiting, must be a regular file, and is read up to [`MAX_SIZE`].

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use thiserror::Error;

/// The largest configuration or PEM file read: far above any real one (a
/// long certificate chain is a few tens of KiB).
pub const MAX_SIZE: u64 = 1024 * 1024;

/// Why a file was not read.
#[derive(Debug, Error)]
pub enum FileError {
    /// A device, a FIFO, a socket or a directory.
    #[error("not a regular file")]
    NotRegular,
    /// Over [`MAX_SIZE`].
    #[error("larger than {} KiB", MAX_SIZE / 1024)]
    TooLarge,
    /// It could not be opened or read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The contents of `path`, a regular file of at most [`MAX_SIZE`] bytes.
pub fn read_small(path: &Path) -> Result<Vec<u8>, FileError> {
    // Opened without waiting (a FIFO opened for reading would wait for a
    // writer, for ever if none came), then checked on the open file, so
    // that nothing can swap the path in between.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(FileError::NotRegular);
    }
    let mut contents = Vec::new();
    // One byte past the bound tells a file at the bound from a larger one,
    // including one that grew since the check.
    file.take(MAX_SIZE + 1).read_to_end(&mut contents)?;
    if contents.len() as u64 > MAX_SIZE {
        return Err(FileError::TooLarge);
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_before_they_are_read() {
        for path in ["/dev/zero", "/dev/null", "/tmp"] {
            assert!(
                matches!(read_small(Path::new(path)), Err(FileError::NotRegular)),
                "{path}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let fifo = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let refused = read_small(&path);
        assert!(matches!(refused, Err(FileError::NotRegular)), "{refused:?}");
    }

    #[test]
    fn a_file_past_the_bound_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; MAX_SIZE as usize]).unwrap();
        assert_eq!(read_small(&path).unwrap().len() as u64, MAX_SIZE);
        std::fs::write(&path, vec![b'a'; MAX_SIZE as usize + 1]).unwrap();
        let refused = read_small(&path);
        assert!(matches!(refused, Err(FileError::TooLarge)), "{refused:?}");
        assert_eq!(FileError::TooLarge.to_string(), "larger than 1024 KiB");
    }
}
