//! A minimal HTTP/1.1 client for the project's own endpoints (`/metrics`,
//! `/readyz`, `/admin/*`): one request per connection, whole body read.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
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
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
        let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let (content_type, bytes) = body.unwrap_or(("", &[]));
        let content_type = if body.is_some() { format!("Content-Type: {content_type}\r\n") } else { String::new() };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(bytes).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow!("{method} {addr}{path} timed out"))??;
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
    fn values_are_percent_encoded() {
        assert_eq!(
            percent_encode("Server restart in 5 min & more?"),
            "Server%20restart%20in%205%20min%20%26%20more%3F"
        );
        assert_eq!(percent_encode("ok-_.~"), "ok-_.~");
        assert_eq!(percent_encode("é/"), "%C3%A9%2F");
    }
}
