//! Scraping: where a metrics endpoint is ([`MetricsUrl`]) and one GET of
//! it with hyper's HTTP/1 client, under a deadline. This module owns the
//! connection and the exchange; what the answer says is `parse.rs`'s.

use std::fmt;
use std::pin::pin;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{ScrapeError, ScrapeFailure, Snapshot};

/// Longest a whole scrape may take, connect to last byte: an admin
/// endpoint answers in a millisecond, and a run must not hang on one that
/// does not.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A plain `http://host[:port]/path` URL of a metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    text: String,
    /// Host name or address, without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// The `Host` header: host and port as written.
    authority: String,
    path_and_query: String,
}

/// Why a metrics URL was refused.
#[derive(Debug, Error)]
#[error("must be a plain http://host:port/path URL ({why})")]
pub struct UrlError {
    why: String,
}

impl MetricsUrl {
    /// The `/metrics` route of the admin endpoint at `admin`.
    pub fn for_admin(admin: std::net::SocketAddr) -> MetricsUrl {
        let authority = admin.to_string();
        MetricsUrl {
            text: format!("http://{authority}/metrics"),
            host: admin.ip().to_string(),
            port: admin.port(),
            authority,
            path_and_query: "/metrics".to_owned(),
        }
    }
}

impl FromStr for MetricsUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<MetricsUrl, UrlError> {
        let refuse = |why: &str| UrlError {
            why: why.to_owned(),
        };
        let uri: Uri = text.parse().map_err(|err| UrlError {
            why: format!("not a URL: {err}"),
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(refuse("https is not supported")),
            Some(other) => return Err(refuse(&format!("scheme {other} is not http"))),
            None => return Err(refuse("no http:// scheme")),
        }
        let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(refuse("no host"));
        }
        let port = authority.port_u16();
        // What is left once host and port are accounted for is either a
        // port that is not a number or credentials: neither makes sense here.
        let expected = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        if authority.as_str() != expected {
            return Err(refuse("the authority must be host or host:port"));
        }
        // The admin endpoint's metrics, where no path is given: its root
        // serves nothing.
        let (text, path_and_query) = match uri.path_and_query().map(|path| path.as_str()) {
            None | Some("" | "/") => (
                format!("{}/metrics", text.trim_end_matches('/')),
                "/metrics".to_owned(),
            ),
            Some(path) => (text.to_owned(), path.to_owned()),
        };
        Ok(MetricsUrl {
            text,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query,
        })
    }
}

impl fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Fetches and reads `url`.
pub async fn scrape(url: &MetricsUrl) -> Result<Snapshot, ScrapeError> {
    let fetched = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(url)).await;
    let failed = |cause| ScrapeError {
        url: url.to_string(),
        cause,
    };
    let text = match fetched {
        Ok(Ok(text)) => text,
        Ok(Err(cause)) => return Err(failed(cause)),
        Err(_) => return Err(failed(ScrapeFailure::Timeout(SCRAPE_TIMEOUT))),
    };
    Snapshot::parse(&text, Instant::now()).map_err(failed)
}

async fn fetch(url: &MetricsUrl) -> Result<String, ScrapeFailure> {
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(ScrapeFailure::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let request = Request::get(url.path_and_query.as_str())
        .header(HOST, url.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let exchange = async move {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, ScrapeFailure>((status, body))
    };
    // The connection has to be driven for the exchange to progress; it
    // ends on its own once the exchange is over (or the server closes).
    let mut exchange = pin!(exchange);
    let mut connection = pin!(connection);
    let (status, body) = tokio::select! {
        biased;
        exchanged = &mut exchange => exchanged?,
        ended = &mut connection => {
            ended?;
            exchange.await?
        }
    };
    if !status.is_success() {
        return Err(ScrapeFailure::Status(status));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ScrapeFailure::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        for good in [
            "http://127.0.0.1:9000/metrics",
            "http://[::1]:9000/metrics",
            "http://localhost/metrics?x=1",
        ] {
            assert!(MetricsUrl::from_str(good).is_ok(), "{good}");
        }
        for bad in [
            "nonsense",
            "ftp://x/metrics",
            "https://127.0.0.1/metrics",
            "http://",
            "http://127.0.0.1:99999/metrics",
            "http://user@127.0.0.1/metrics",
            "127.0.0.1:9000/metrics",
        ] {
            assert!(MetricsUrl::from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_url_keeps_its_host_port_and_path() {
        let url = MetricsUrl::from_str("http://[::1]:9000/metrics?x=1").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.authority.as_str()),
            ("::1", 9000, "[::1]:9000")
        );
        assert_eq!(url.path_and_query, "/metrics?x=1");
        let admin = MetricsUrl::for_admin("127.0.0.1:9001".parse().unwrap());
        assert_eq!(admin.to_string(), "http://127.0.0.1:9001/metrics");
    }
}
