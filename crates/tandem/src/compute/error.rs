//! Why the compute runtime would not start ([`ComputeStartError`]), and
//! why a job gave no result ([`ComputeError`]).

use std::any::Any;

use thiserror::Error;

use crate::range::OutOfRange;

/// Why the compute runtime could not start.
#[derive(Debug, Error)]
pub enum ComputeStartError {
    /// A [`ComputeConfig`](super::ComputeConfig) field is out of range.
    #[error("invalid compute configuration: {0}")]
    InvalidConfig(#[from] OutOfRange),
    /// The OS refused its threads.
    #[error("cannot start the tandem-compute runtime: {0}")]
    Runtime(std::io::Error),
}

/// Why a job gave no result.
#[derive(Debug, Error)]
pub enum ComputeError {
    /// The work panicked; the message is the panic's, when it is text.
    #[error("the compute job panicked: {0}")]
    Panicked(String),
    /// The compute runtime has stopped (the server is shutting down).
    #[error("the compute runtime has stopped")]
    Stopped,
}

impl From<ComputeError> for std::io::Error {
    /// A job's failure as its connection's error.
    fn from(err: ComputeError) -> Self {
        std::io::Error::other(err)
    }
}

/// A panic's payload as the job's error.
pub(super) fn panicked(payload: Box<dyn Any + Send>) -> ComputeError {
    ComputeError::Panicked(panic_message(&*payload))
}

/// A panic's message, when its payload is text (as `panic!` makes it).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned())
}
