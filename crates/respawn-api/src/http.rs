//! HTTP calls to Respawn's own servers and to webhooks, over one `reqwest`
//! client: a fresh connection per request (as before: a server's cap on
//! connections per address, and the drills' cut links, see every call), at
//! most [`TIMEOUT`] for a whole exchange unless a call says otherwise, TLS
//! as [`crate::tls`] sets it up. A server is named `host:port` (plain HTTP)
//! or `https://host:port`.

use std::sync::OnceLock;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
pub use reqwest::Method;
use serde::de::DeserializeOwned;

/// The longest a whole exchange may take unless the call sets its own limit.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: a server that sends more (a registry entry
/// pointing somewhere hostile) costs the caller this much memory at most.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Everything but the unreserved characters of RFC 3986.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a path segment or a query value.
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, NOT_UNRESERVED).to_string()
}

/// Why a call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with a status outside 2xx.
    #[error("answered {status}: {answer}")]
    Refused { status: u16, answer: String },
    #[error("did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("did not answer: {0}")]
    Unreachable(String),
    /// The request could not be made (a method or URL that is not one).
    #[error("not a request: {0}")]
    Invalid(String),
    /// A 2xx answer that is not the contract's type.
    #[error("answered something unreadable: {0}")]
    Unreadable(String),
}

impl CallError {
    fn from_reqwest(e: reqwest::Error, limit: Duration) -> Self {
        if e.is_timeout() {
            return CallError::TimedOut(limit);
        }
        // reqwest's own text names only the URL; the cause (refused, reset) is at the bottom.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        CallError::Unreachable(cause.to_string())
    }

    /// The status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The one client: connections are not kept (see the module's note).
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .pool_max_idle_per_host(0)
            .no_proxy()
            .user_agent("respawn")
            .use_preconfigured_tls(crate::tls::client_config().as_ref().clone())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// A request to one of the project's servers, given as `host:port` and a path.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub addr: &'a str,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    pub json: Option<String>,
    pub limit: Duration,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, addr: &'a str, path: &'a str) -> Self {
        Self { method, addr, path, bearer: None, json: None, limit: TIMEOUT }
    }

    pub fn bearer(mut self, token: Option<&'a str>) -> Self {
        self.bearer = token;
        self
    }

    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        self.json = Some(serde_json::to_string(body).unwrap_or_default());
        self
    }

    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The whole response, whatever its status.
    pub async fn send(self) -> Result<Response, CallError> {
        send(self.method, &url(self.addr, self.path), self.bearer, self.json, &[], self.limit).await
    }

    /// A 2xx answer's body; any other status is a [`CallError::Refused`].
    pub async fn text(self) -> Result<String, CallError> {
        let response = self.send().await?;
        if (200..300).contains(&response.status) {
            Ok(response.body)
        } else {
            Err(CallError::Refused { status: response.status, answer: response.body.trim().to_owned() })
        }
    }

    /// A 2xx answer read as the contract's type `T`.
    pub async fn read<T: DeserializeOwned>(self) -> Result<T, CallError> {
        let body = self.text().await?;
        serde_json::from_str(&body).map_err(|e| CallError::Unreadable(e.to_string()))
    }
}

/// The URL of `path` at a server named `host:port` (plain HTTP) or by its
/// origin (`https://host:port`, `http://host:port`).
fn url(server: &str, path: &str) -> String {
    if server.starts_with("https://") || server.starts_with("http://") {
        format!("{}{path}", server.trim_end_matches('/'))
    } else {
        format!("http://{server}{path}")
    }
}

async fn send(
    method: Method,
    url: &str,
    bearer: Option<&str>,
    json: Option<String>,
    headers: &[(&str, &str)],
    limit: Duration,
) -> Result<Response, CallError> {
    let mut request = client().request(method, url).timeout(limit);
    if let Some(token) = bearer {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(body) = json {
        request = request.header(CONTENT_TYPE, "application/json").body(body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send().await.map_err(|e| CallError::from_reqwest(e, limit))?;
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let too_long = || CallError::Unreadable(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
    if response.content_length().is_some_and(|len| len > MAX_ANSWER_BYTES as u64) {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| CallError::from_reqwest(e, limit))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn method(name: &str) -> Result<Method, CallError> {
    Method::from_bytes(name.as_bytes()).map_err(|_| CallError::Invalid(format!("{name:?} is not an HTTP method")))
}

/// `method path` to `addr` (`host:port`): the status and body, whatever the status.
pub async fn request(addr: &str, method: &str, path: &str, bearer: Option<&str>) -> Result<(u16, String), CallError> {
    exchange(addr, method, path, bearer, None).await.map(|r| (r.status, r.body))
}

/// [`request`] with a JSON body.
pub async fn request_json(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: &str,
) -> Result<(u16, String), CallError> {
    exchange(addr, method, path, bearer, Some(json)).await.map(|r| (r.status, r.body))
}

/// Like [`request_json`] (or [`request`] without `json`), keeping the headers.
pub async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&str>,
) -> Result<Response, CallError> {
    let mut call = Call::new(self::method(method)?, addr, path).bearer(bearer);
    call.json = json.map(str::to_owned);
    call.send().await
}

/// `GET /metrics`, failing on any status but 2xx.
pub async fn scrape(addr: &str) -> Result<String, CallError> {
    Call::new(Method::GET, addr, "/metrics").text().await
}

/// An `http://` or `https://` URL (a webhook's).
pub type Url = reqwest::Url;

/// Parses a webhook URL: http or https, with a host.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: only http:// and https:// URLs"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?}: no host"));
    }
    Ok(parsed)
}

/// POSTs `json` to `url` with extra `headers`, within [`TIMEOUT`].
pub async fn post_json(url: &Url, json: &str, headers: &[(&str, &str)]) -> Result<Response, CallError> {
    send(Method::POST, url.as_str(), None, Some(json.to_owned()), headers, TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_named_by_host_and_port_or_by_its_origin() {
        assert_eq!(url("127.0.0.1:7360", "/healthz"), "http://127.0.0.1:7360/healthz");
        assert_eq!(url("https://eu1.example:443", "/v1/zones"), "https://eu1.example:443/v1/zones");
        assert_eq!(url("https://eu1.example/", "/v1/zones"), "https://eu1.example/v1/zones");
        assert_eq!(url("http://[::1]:7360", "/metrics"), "http://[::1]:7360/metrics");
    }

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host() {
        let u = parse_url("https://hooks.slack.com/services/T0/B0/xyz").expect("url");
        assert_eq!(
            (u.scheme(), u.host_str(), u.port_or_known_default()),
            ("https", Some("hooks.slack.com"), Some(443))
        );
        assert_eq!(u.path(), "/services/T0/B0/xyz");
        let u = parse_url("http://127.0.0.1:9000").expect("url");
        assert_eq!((u.port_or_known_default(), u.path()), (Some(9000), "/"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://x:port/").is_err());
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

    /// A server on a thread that answers every request with `head` and then
    /// 64 KiB chunks until the caller hangs up.
    fn endless_server(head: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let _ = stream.read(&mut [0u8; 4096]);
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                let _ = stream.write_all(head.as_bytes());
                while stream.write_all(chunk.as_bytes()).is_ok() {}
            }
        });
        addr
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_unread() {
        let streaming = endless_server("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let error = Call::new(Method::GET, &streaming, "/admin/info").send().await.expect_err("capped");
        assert!(matches!(&error, CallError::Unreadable(why) if why.contains("over 8388608 bytes")), "{error}");
        let declared = endless_server("HTTP/1.1 200 OK\r\ncontent-length: 9000000000\r\n\r\n");
        let error = Call::new(Method::GET, &declared, "/admin/info").send().await.expect_err("capped");
        assert!(matches!(&error, CallError::Unreadable(why) if why.contains("over")), "{error}");
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_unreachable_with_the_cause() {
        // Port 1 on loopback: nothing listens there.
        let error = Call::new(Method::GET, "127.0.0.1:1", "/healthz").send().await.expect_err("no server");
        assert!(matches!(&error, CallError::Unreachable(why) if why.contains("refused")), "{error}");
    }
}
