//! The admin endpoint from a client's side: plain HTTP/1.1 requests over
//! a socket, and `/metrics` read into its samples.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Between two polls of an endpoint.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// An HTTP response as it came off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Parses a raw HTTP/1.1 response: what `curl -i` prints, or what a
    /// server writes before closing a `Connection: close` exchange.
    pub fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {status_line:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end. Every
/// step fails after `patience` instead of hanging.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    patience: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, patience)?;
    stream.set_read_timeout(Some(patience))?;
    stream.set_write_timeout(Some(patience))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(Response::parse(&raw))
}

/// `GET path`, which must get an answer.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, PATIENCE)
        .unwrap_or_else(|err| panic!("GET http://{addr}{path} failed: {err}"))
}

/// A scraped `/metrics` page: every sample's value, by its series as
/// written (`name` or `name{label="value"}`).
pub struct Exposition {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

impl Exposition {
    pub fn parse(text: String) -> Exposition {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("sample without a value: {line:?}"));
                let value = value
                    .parse()
                    .unwrap_or_else(|_| panic!("sample with a malformed value: {line:?}"));
                (series.to_owned(), value)
            })
            .collect();
        Exposition { text, samples }
    }

    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The `runtime` label values that series `name` has.
    pub fn runtimes(&self, name: &str) -> BTreeSet<String> {
        let prefix = format!("{name}{{runtime=\"");
        self.samples
            .keys()
            .filter_map(|series| series.strip_prefix(&prefix)?.strip_suffix("\"}"))
            .map(str::to_owned)
            .collect()
    }
}

/// `GET /metrics`, which must answer 200.
pub fn scrape(admin: SocketAddr) -> Exposition {
    let response = get(admin, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    Exposition::parse(response.text())
}

/// Scrapes until every series in `expected` has its value, and returns that
/// scrape; fails after `PATIENCE`, showing the last one.
pub fn scrape_until(admin: SocketAddr, expected: &[(&str, f64)]) -> Exposition {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exposition = scrape(admin);
        if expected
            .iter()
            .all(|(series, value)| exposition.get(series) == Some(*value))
        {
            return exposition;
        }
        assert!(
            Instant::now() < deadline,
            "expected {expected:?}; the last scrape was:\n{}",
            exposition.text
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
