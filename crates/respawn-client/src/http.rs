//! A minimal HTTP/1.1 client for the project's own endpoints (`/metrics`,
//! `/readyz`, `/admin/*`) and for webhooks (http or https, with the Mozilla
//! roots of `webpki-roots`): one request per connection, whole body read.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Percent-encodes everything but unreserved characters: a path segment or
/// a query value.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to `addr` (`host:port`) and returns status and body.
pub async fn request(addr: &str, method: &str, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    send(addr, method, path, bearer, None).await.map(|r| (r.status, r.body))
}

/// Like [`request_json`] (or [`request`] without `json`), keeping the headers.
pub async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
) -> Result<Response> {
    send(addr, method, path, bearer, json.map(|j| ("application/json", j.as_bytes()))).await
}

/// [`request`] with a JSON body.
pub async fn request_json(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: &str,
) -> Result<(u16, String)> {
    send(addr, method, path, bearer, Some(("application/json", json.as_bytes()))).await.map(|r| (r.status, r.body))
}

async fn send(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Result<Response> {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let exchange = async {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        over(stream, addr, method, path, &auth, body).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("{method} {addr}{path} timed out"))?
}

/// An `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, from the first `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => bail!("{url:?}: only http:// and https:// URLs"),
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| anyhow!("{url:?}: port {p:?}"))?),
            None => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() || host.contains(['@', ' ']) || path.chars().any(char::is_control) {
            bail!("{url:?}: not a usable URL");
        }
        Ok(Self { tls, host: host.to_owned(), port, path: path.to_owned() })
    }
}

/// POSTs `json` to `url` (TLS for https, with extra `headers`), within 10 s.
pub async fn post_json(url: &Url, json: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let addr = format!("{}:{}", url.host, url.port);
    let body = Some(("application/json", json.as_bytes()));
    let exchange = async {
        let tcp = TcpStream::connect(&addr).await.with_context(|| format!("connect to {addr}"))?;
        if !url.tls {
            return over(tcp, &url.host, "POST", &url.path, &extra, body).await;
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(trust_roots())
            .with_no_client_auth();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(url.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?;
        over(tls, &url.host, "POST", &url.path, &extra, body).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("POST {addr}{} timed out", url.path))?
}

/// The Mozilla roots, plus the system's bundle (`SSL_CERT_FILE`, else
/// Debian's path) where there is one: a site's own or proxy CA lives there.
fn trust_roots() -> tokio_rustls::rustls::RootCertStore {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = tokio_rustls::rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
    if let Ok(pem) = std::fs::read(&bundle) {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
        roots.add_parsable_certificates(certs);
    }
    roots
}

/// One request and its whole response over `stream`; `headers` are whole lines.
async fn over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<(&str, &[u8])>,
) -> Result<Response> {
    let (content_type, bytes) = body.unwrap_or(("", &[]));
    let content_type = if body.is_some() { format!("Content-Type: {content_type}\r\n") } else { String::new() };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(bytes).await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it has answered: what was read counts.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() {
            return Err(e.into());
        }
    }
    let addr = host;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response from {addr}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line from {addr}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: body.to_owned() })
}

/// `GET /metrics`, failing on any status but 200.
pub async fn scrape(addr: &str) -> Result<String> {
    match request(addr, "GET", "/metrics", None).await? {
        (200, body) => Ok(body),
        (status, _) => Err(anyhow!("{addr}/metrics answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_paths() {
        let u = Url::parse("https://hooks.slack.com/services/T0/B0/xyz").expect("url");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hooks.slack.com", 443, "/services/T0/B0/xyz")
        );
        let u = Url::parse("http://127.0.0.1:9000").expect("url");
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 9000, "/"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
        assert!(Url::parse("http://x:port/").is_err());
    }

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(
            percent_encode("Server restart in 5 min & more?"),
            "Server%20restart%20in%205%20min%20%26%20more%3F"
        );
        assert_eq!(percent_encode("ok-_.~"), "ok-_.~");
        assert_eq!(percent_encode("é/"), "%C3%A9%2F");
    }
}
