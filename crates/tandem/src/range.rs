//! The one range check of every configuration: the library's
//! ([`ServerConfig`](crate::ServerConfig), [`ComputeConfig`](crate::ComputeConfig),
//! [`EchoConfig`](crate::EchoConfig)) and the command line's, which reports
//! the same error under the option's name.

use std::fmt::Display;
use std::ops::RangeInclusive;

use thiserror::Error;

/// A setting outside the range it allows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {}, got {value}", self.rule())]
pub struct OutOfRange {
    /// The setting, as its owner names it (a field, or an option).
    pub field: &'static str,
    /// The smallest value allowed, as written.
    pub min: String,
    /// The largest value allowed, as written.
    pub max: String,
    /// The value given, as written.
    pub value: String,
}

impl OutOfRange {
    /// What the setting requires: `must be between 1 and 4096`.
    pub fn rule(&self) -> String {
        format!("must be between {} and {}", self.min, self.max)
    }
}

/// `value` if it lies in `allowed`; else the error naming `field` and the
/// range.
pub fn in_range<T>(
    field: &'static str,
    value: T,
    allowed: RangeInclusive<T>,
) -> Result<T, OutOfRange>
where
    T: PartialOrd + Display,
{
    if allowed.contains(&value) {
        return Ok(value);
    }
    Err(OutOfRange {
        field,
        min: allowed.start().to_string(),
        max: allowed.end().to_string(),
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_inside_its_range_is_returned_as_it_is() {
        assert_eq!(in_range("workers", 1, 1..=4096), Ok(1));
        assert_eq!(in_range("workers", 4096, 1..=4096), Ok(4096));
    }

    #[test]
    fn a_value_outside_its_range_names_the_field_the_range_and_the_value() {
        let err = in_range("workers", 0usize, 1..=4096).unwrap_err();
        assert_eq!(err.field, "workers");
        assert_eq!(err.rule(), "must be between 1 and 4096");
        assert_eq!(err.to_string(), "workers must be between 1 and 4096, got 0");
        assert!(in_range("ratio", 1.5, 0.0..=1.0).is_err());
    }
}
