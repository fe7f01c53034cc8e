//! [`IpRanges`]: a list of IP address ranges, as an operator writes one to
//! say which peers are trusted (`10.0.0.0/8,2001:db8::/32,192.0.2.7`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use thiserror::Error;

/// A non-empty list of IP address ranges in CIDR notation; a bare address
/// is a range of one. An IPv4 client on a dual-stack socket, seen as an
/// IPv4-mapped IPv6 address, is matched as the IPv4 address it is.
///
/// ```
/// use tandem::server::IpRanges;
///
/// let trusted: IpRanges = "10.0.0.0/8, 2001:db8::/32,192.0.2.7".parse().unwrap();
/// assert!(trusted.contains("10.1.2.3".parse().unwrap()));
/// assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!trusted.contains("192.0.2.8".parse().unwrap()));
/// assert_eq!(trusted.to_string(), "10.0.0.0/8,2001:db8::/32,192.0.2.7/32");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRanges(Vec<IpNet>);

/// Why a text is not a list of IP address ranges.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{text:?} is not an IP address or a CIDR range (write it like 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7)"
)]
pub struct InvalidIpRange {
    /// The item that did not parse, or the whole text if it was empty.
    pub text: String,
}

impl IpRanges {
    /// Whether `ip` is in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }
}

impl FromStr for IpRanges {
    type Err = InvalidIpRange;

    /// Ranges separated by commas; blanks around them are ignored. Bits
    /// set below a range's prefix are cleared: `10.1.2.3/8` is `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, InvalidIpRange> {
        let ranges = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let range = match item.parse::<IpNet>() {
                    Ok(range) => range,
                    Err(_) => IpNet::from(item.parse::<IpAddr>().map_err(|_| InvalidIpRange {
                        text: item.to_owned(),
                    })?),
                };
                Ok(canonical(range.trunc()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.is_empty() {
            return Err(InvalidIpRange {
                text: text.to_owned(),
            });
        }
        Ok(IpRanges(ranges))
    }
}

/// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) as the IPv4 range it
/// stands for (`10.0.0.0/8`): peers are matched by their canonical address,
/// so a mapped range would otherwise match none.
fn canonical(range: IpNet) -> IpNet {
    let IpNet::V6(v6) = range else {
        return range;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(prefix)) => ipnet::Ipv4Net::new(v4, prefix).map_or(range, IpNet::V4),
        _ => range,
    }
}

impl fmt::Display for IpRanges {
    /// The ranges, separated by commas: text that parses back to them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_bare_address_is_a_range_of_one() {
        let ranges: IpRanges = "192.0.2.7,2001:db8::1".parse().unwrap();
        assert!(ranges.contains(ip("192.0.2.7")));
        assert!(!ranges.contains(ip("192.0.2.6")));
        assert!(ranges.contains(ip("2001:db8::1")));
        assert!(!ranges.contains(ip("2001:db8::2")));
    }

    #[test]
    fn host_bits_below_the_prefix_are_cleared() {
        let ranges: IpRanges = "10.1.2.3/8".parse().unwrap();
        assert_eq!(ranges.to_string(), "10.0.0.0/8");
        assert!(ranges.contains(ip("10.200.0.1")));
    }

    #[test]
    fn an_ipv4_range_matches_ipv4_mapped_ipv6_peers_and_no_other_ipv6() {
        let ranges: IpRanges = "127.0.0.0/8".parse().unwrap();
        assert!(ranges.contains(ip("::ffff:127.0.0.1")));
        assert!(!ranges.contains(ip("::1")));
    }

    #[test]
    fn an_ipv4_mapped_range_is_the_ipv4_range_it_stands_for() {
        let ranges: IpRanges = "::ffff:10.0.0.0/104,::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ranges.to_string(), "10.0.0.0/8,192.0.2.7/32");
        assert!(ranges.contains(ip("10.1.2.3")));
        assert!(ranges.contains(ip("::ffff:10.1.2.3")));
        assert!(ranges.contains(ip("192.0.2.7")));
    }

    #[test]
    fn text_that_is_no_range_is_refused_naming_the_item() {
        for (text, item) in [
            ("10.0.0.0/8,nonsense", "nonsense"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("", ""),
            (" , ", " , "),
            ("localhost", "localhost"),
        ] {
            assert_eq!(
                text.parse::<IpRanges>(),
                Err(InvalidIpRange {
                    text: item.to_owned()
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn display_parses_back() {
        let ranges: IpRanges = " 10.0.0.0/8 ,::1 ".parse().unwrap();
        assert_eq!(ranges.to_string().parse::<IpRanges>(), Ok(ranges));
    }
}
