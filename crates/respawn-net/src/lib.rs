//! The guard in front of the zone server's and the platform server's
//! listeners: a cap on the connections one IP address holds open (a flood
//! from one host cannot take every socket), a deadline for a new
//! connection's first request head (slowloris: a client trickling its
//! headers holds nothing for long), and an idle timeout for connections that
//! stop sending altogether (WebSocket clients answer the zone server's pings,
//! so a live player is never idle this long). Behind a load balancer, the
//! client's address comes from `X-Forwarded-For` only when the peer is a
//! listed proxy ([`TrustedProxies`]), whose connections the cap leaves alone.
//! With a certificate ([`ServerTls`]) the listener serves TLS.

mod handoff;
mod tls;
pub use handoff::{serve, take_upgraded, Handoff, Socket};
pub use tls::{ServerTls, Transport};

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// Time a new connection has to send its first complete request head.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may go without sending a byte once its first request is in.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a refused connection is told before it is closed.
const REFUSAL: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// Counters of the guard, registered under a server's metric prefix.
#[derive(Debug, Clone)]
pub struct GuardMetrics {
    refused: IntCounter,
    timed_out: IntCounterVec,
    open: IntGauge,
}

impl GuardMetrics {
    /// Registers `{prefix}_connections_refused_total`,
    /// `{prefix}_connections_timed_out_total{phase}` (`tls_handshake`, `request_head`, `idle`)
    /// and `{prefix}_tcp_connections` in `registry`.
    pub fn register(registry: &Registry, prefix: &str) -> prometheus::Result<Self> {
        let refused = IntCounter::new(
            format!("{prefix}_connections_refused_total"),
            "Connections refused because their IP address held the most allowed.",
        )?;
        let timed_out = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_connections_timed_out_total"),
                "Connections closed for sending too slowly: no TLS handshake or complete first request head in time, or idle.",
            ),
            &["phase"],
        )?;
        let open = IntGauge::new(format!("{prefix}_tcp_connections"), "TCP connections open (HTTP and WebSocket).")?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(timed_out.clone()))?;
        registry.register(Box::new(open.clone()))?;
        for phase in ["tls_handshake", "request_head", "idle"] {
            timed_out.with_label_values(&[phase]);
        }
        Ok(Self { refused, timed_out, open })
    }
}

/// The proxies (load balancers) whose `X-Forwarded-For` is believed; any
/// other peer could write whatever it likes there.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpAddr]>);

impl TrustedProxies {
    pub fn new(proxies: Vec<IpAddr>) -> Self {
        Self(proxies.into())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }

    /// The client behind `peer`: when `peer` is a listed proxy, the
    /// rightmost address of `X-Forwarded-For` that is not one (the one the
    /// first trusted proxy saw); otherwise, or without a readable one, the peer.
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        let mut hops = hops.iter().flat_map(|v| v.split(',')).map(|hop| hop.trim().parse::<IpAddr>()).rev();
        match hops.find(|hop| !matches!(hop, Ok(ip) if self.contains(*ip))) {
            Some(Ok(client)) => client,
            // Unreadable from there on: the nearest hop that can be vouched for.
            _ => peer,
        }
    }
}

/// A listener that admits at most `per_ip` open connections per IP address
/// (0: no cap) and puts deadlines on the ones it admits. Serve it with
/// `axum::serve` like a `TcpListener`.
#[derive(Debug)]
pub struct GuardedListener {
    inner: TcpListener,
    per_ip: u32,
    proxies: TrustedProxies,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    metrics: GuardMetrics,
    tls: Option<ServerTls>,
    /// TLS handshakes under way, each in a task of its own: one slow client
    /// never holds up the next connection's accept.
    handshakes: JoinSet<Option<(GuardedStream, SocketAddr)>>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, per_ip: u32, metrics: GuardMetrics) -> Self {
        Self {
            inner,
            per_ip,
            proxies: TrustedProxies::default(),
            metrics,
            open: Arc::default(),
            tls: None,
            handshakes: JoinSet::new(),
        }
    }

    /// Serves TLS with this certificate when given one.
    pub fn serving_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Leaves the connections of these proxies uncapped: each carries many clients.
    pub fn trusting(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// A place for one more connection from `ip`, if it has one left.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = open.entry(ip).or_insert(0);
        if self.per_ip != 0 && *held >= self.per_ip && !self.proxies.contains(ip) {
            return None;
        }
        *held += 1;
        self.metrics.open.inc();
        Some(Slot { ip, open: self.open.clone(), gauge: self.metrics.open.clone() })
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Cancel-safe, as axum's graceful shutdown needs: both branches are.
            let accepted = tokio::select! {
                biased;
                Some(handshake) = self.handshakes.join_next(), if !self.handshakes.is_empty() => match handshake {
                    Ok(Some(ready)) => return ready,
                    _ => continue,
                },
                accepted = self.inner.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.admit(peer.ip()) else {
                self.metrics.refused.inc();
                tracing::debug!(%peer, "connection refused: too many from this address");
                // Best effort and never waiting: the socket's buffer takes these few bytes.
                let _ = stream.try_write(REFUSAL);
                continue;
            };
            // Updates are small frames; Nagle's algorithm would hold them for the peer's delayed ACK.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let (timed_out, deadline) = (self.metrics.timed_out.clone(), Instant::now() + REQUEST_HEAD_TIMEOUT);
            let Some(tls) = &self.tls else {
                return (GuardedStream::new(Transport::Plain(stream), slot, timed_out, deadline), peer);
            };
            let acceptor = tls.acceptor.clone();
            self.handshakes.spawn(async move {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        Some((GuardedStream::new(Transport::Tls(Box::new(tls)), slot, timed_out, deadline), peer))
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        timed_out.with_label_values(&["tls_handshake"]).inc();
                        None
                    }
                }
            });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One admitted connection's place; given back when the connection closes.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, u32>>>,
    gauge: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = open.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An admitted connection: reads fail with `TimedOut` once a deadline passes
/// without what it waits for (the end of the first request head, then any
/// byte), and the server closes it.
#[derive(Debug)]
pub struct GuardedStream {
    inner: Transport,
    _slot: Slot,
    /// The first request head is complete (its blank line was read).
    head_done: bool,
    /// The last bytes read while looking for the head's end: `\r\n\r\n` may span reads.
    tail: [u8; 3],
    deadline: Pin<Box<Sleep>>,
    timed_out: IntCounterVec,
}

impl GuardedStream {
    /// A connection whose first request head is due by `head_deadline`.
    fn new(inner: Transport, slot: Slot, timed_out: IntCounterVec, head_deadline: Instant) -> Self {
        let deadline = Box::pin(tokio::time::sleep_until(head_deadline));
        Self { inner, _slot: slot, head_done: false, tail: [0; 3], deadline, timed_out }
    }

    /// Looks for the end of the first request head in bytes just read.
    fn scan_head(&mut self, read: &[u8]) {
        let mut window: Vec<u8> = self.tail.to_vec();
        window.extend_from_slice(read);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            self.head_done = true;
        }
        let keep = window.len().min(3);
        self.tail = [0; 3];
        self.tail[3 - keep..].copy_from_slice(&window[window.len() - keep..]);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    if !self.head_done {
                        let read = read.to_vec();
                        self.scan_head(&read);
                    }
                    // Until the head is complete its deadline stands, however slowly bytes come.
                    if self.head_done {
                        self.deadline.as_mut().reset(Instant::now() + IDLE_TIMEOUT);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let phase = if self.head_done { "idle" } else { "request_head" };
                    self.timed_out.with_label_values(&[phase]).inc();
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("{phase} timeout"))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forwarded_address_is_believed_only_from_a_listed_proxy() {
        use super::TrustedProxies;
        use axum::http::{HeaderMap, HeaderValue};
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let proxies = TrustedProxies::new(vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
            }
            h
        };
        // The client wrote the leftmost entry itself; the proxies appended the rest.
        let forwarded = headers(&["6.6.6.6, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &forwarded), ip("203.0.113.9"));
        assert_eq!(proxies.client(ip("198.51.100.7"), &forwarded), ip("198.51.100.7"), "not a proxy: ignored");
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers(&[])), ip("10.0.0.1"), "nothing forwarded");
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers(&["203.0.113.9, junk"])), ip("10.0.0.1"));
        assert_eq!(TrustedProxies::default().client(ip("10.0.0.1"), &forwarded), ip("10.0.0.1"));
    }

    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let registry = Registry::new();
        let metrics = GuardMetrics::register(&registry, "t").expect("metrics");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = TcpStream::connect(addr);
            let (server, _) = tokio::join!(listener.accept(), client);
            let guarded = GuardedListener::new(listener, 1, metrics.clone());
            let slot = guarded.admit(addr.ip()).expect("a first place");
            assert!(guarded.admit(addr.ip()).is_none(), "one per address");
            let server = Transport::Plain(server.expect("accepted").0);
            let mut s = GuardedStream::new(server, slot, metrics.timed_out.clone(), Instant::now());
            for part in [&b"GET / HTTP/1.1\r\nhost: x\r"[..], b"\n", b"\r", b"\n"] {
                assert!(!s.head_done);
                s.scan_head(part);
            }
            assert!(s.head_done);
            drop(s);
            assert!(guarded.admit(addr.ip()).is_some(), "a closed connection gives its place back");
        });
    }
}
