//! A duration as people write it (`300s`, `1m`, `250ms`, `0`), for the
//! options of `tandem serve`, the load generator and the suite: the one
//! spelling of a duration on the command line, in TOML and in JSON results.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written the way people write it: `300s`, `1m`, `250ms`, `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        text.parse().map_err(|err| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {err} (write it like \"300s\", \"1m\" or \"250ms\")"
            ))
        })
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for HumanDuration {
    /// As it is written (`5m`, `250ms`), so that it reads back the same.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_reads_back_as_it_is_written() {
        for text in ["0", "250ms", "300s", "1m 30s", "365days"] {
            let duration: HumanDuration = text.parse().unwrap();
            let written = duration.to_string();
            assert_eq!(
                written.parse::<HumanDuration>().unwrap(),
                duration,
                "{text} -> {written}"
            );
        }
    }
}
