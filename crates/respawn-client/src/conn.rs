//! One protocol connection to a zone server over a real WebSocket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use respawn_proto::{client_message, server_message, Welcome};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The read buffer of a connection: tungstenite zero-fills its free part
/// before every read (128 KiB by default, which made a load generator's
/// clients spend most of their CPU on it). An update is a few hundred bytes;
/// a larger frame is still read whole.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A TCP connection from `source` to the host of the `ws://` or `wss://` URL, Nagle off.
async fn bound_stream(url: &str, source: IpAddr) -> Result<TcpStream> {
    let uri: Uri = url.parse().context("not a URL")?;
    let port = match uri.scheme_str() {
        Some("ws") => uri.port_u16().unwrap_or(80),
        Some("wss") => uri.port_u16().unwrap_or(443),
        _ => bail!("not a ws:// or wss:// URL"),
    };
    let host = uri.host().context("no host in the URL")?;
    let target = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .with_context(|| format!("{host} has no address of the source's family"))?;
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("cannot bind to {source}"))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What reading the connection produced.
#[derive(Debug)]
pub enum Event {
    Message(server_message::Body),
    /// The server closed the connection (code 1006 when it just vanished).
    Closed {
        code: u16,
        reason: String,
    },
}

/// The server closed the connection instead of welcoming the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRefused {
    pub code: u16,
    pub reason: String,
}

impl std::fmt::Display for JoinRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "join refused: {} {}", self.code, self.reason)
    }
}

impl std::error::Error for JoinRefused {}

/// The server answered the WebSocket upgrade with an HTTP error instead
/// (429: the address already holds as many connections as it may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRefused {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for UpgradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upgrade refused: HTTP {} {}", self.status, self.body.trim())
    }
}

impl std::error::Error for UpgradeRefused {}

#[derive(Debug)]
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Bytes of binary frames received.
    pub bytes_in: u64,
}

impl Connection {
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_from(url, None).await
    }

    /// [`Connection::connect`] from the local address `source` (another
    /// loopback address, say); any address with `None`. A `wss://` URL is
    /// reached over TLS as [`respawn_api::tls`] sets it up.
    pub async fn connect_from(url: &str, source: Option<IpAddr>) -> Result<Self> {
        let config = Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES));
        let tls = Some(Connector::Rustls(respawn_api::tls::client_config()));
        let connected = match source {
            // Nagle off: inputs are small frames that must leave at once.
            None => tokio_tungstenite::connect_async_tls_with_config(url, config, true, tls).await,
            Some(ip) => {
                let stream = bound_stream(url, ip).await.with_context(|| format!("connect to {url} from {ip}"))?;
                tokio_tungstenite::client_async_tls_with_config(url, stream, config, tls).await
            }
        };
        let (ws, _) = connected
            .map_err(|e| match e {
                WsError::Http(response) => {
                    let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    anyhow::Error::new(UpgradeRefused { status: response.status().as_u16(), body: body.into_owned() })
                }
                other => anyhow::Error::new(other),
            })
            .with_context(|| format!("connect to {url}"))?;
        Ok(Self { ws, bytes_in: 0 })
    }

    pub async fn send(&mut self, body: client_message::Body) -> Result<()> {
        self.send_raw(Message::Binary(respawn_proto::encode_client(body))).await
    }

    /// Sends any WebSocket frame, well-formed or not (protocol tests use it).
    pub async fn send_raw(&mut self, frame: Message) -> Result<()> {
        self.ws.send(frame).await.context("send")
    }

    /// Sends `Join` and waits for the `Welcome` (or the refusal). With a
    /// resume token the server gives back the character it kept; a zone
    /// server whose characters the platform keeps wants the play grant's
    /// character ticket for any other join.
    pub async fn join(
        &mut self,
        token: String,
        resume_token: Option<String>,
        character_ticket: &str,
        zone: &str,
        limit: Duration,
    ) -> Result<Welcome> {
        self.send(client_message::Body::Join(respawn_proto::Join {
            protocol_version: respawn_proto::PROTOCOL_VERSION,
            token,
            zone: zone.to_owned(),
            resume_token: resume_token.unwrap_or_default(),
            character_ticket: character_ticket.to_owned(),
        }))
        .await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next())
                .await
                .map_err(|_| anyhow!("no welcome within {limit:?}"))??
            {
                Event::Message(server_message::Body::Welcome(w)) => return Ok(w),
                Event::Message(_) => continue,
                Event::Closed { code, reason } => return Err(JoinRefused { code, reason }.into()),
            }
        }
    }

    /// The next message or the close. Malformed server frames are errors.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            let Some(msg) = self.ws.next().await else {
                return Ok(Event::Closed { code: 1006, reason: "connection ended".into() });
            };
            match msg {
                Ok(Message::Binary(bytes)) => {
                    self.bytes_in += bytes.len() as u64;
                    return Ok(Event::Message(respawn_proto::decode_server(&bytes)?));
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    return Ok(Event::Closed { code, reason });
                }
                Ok(_) => continue,
                Err(e) => return Ok(Event::Closed { code: 1006, reason: e.to_string() }),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}
