//! One protocol connection to a zone server over a real WebSocket.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use respawn_proto::{client_message, server_message, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

#[derive(Debug)]
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Bytes of binary frames received.
    pub bytes_in: u64,
}

impl Connection {
    pub async fn connect(url: &str) -> Result<Self> {
        // Nagle off: inputs are small frames that must leave at once.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
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
