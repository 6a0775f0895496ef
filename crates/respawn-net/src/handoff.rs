//! Taking a connection out of the async HTTP stack once it is upgraded: the
//! zone server's players' sockets are served by a thread of its own, not by
//! a task each. [`serve`] is HTTP/1.1 with upgrades like `axum::serve`, but
//! an upgraded connection's `hyper::upgrade::Upgraded` downcasts to
//! `TokioIo<GuardedStream>`, which [`take_upgraded`] turns into a plain
//! non-blocking [`Socket`] (TLS included) and its place in the cap.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use crate::{GuardedListener, GuardedStream, Slot, Transport};

/// A connection's bytes after the hand-off: a non-blocking socket, as it
/// came or through TLS. Reads and writes return `WouldBlock` rather than wait.
#[derive(Debug)]
pub enum Socket {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>>),
}

impl Socket {
    fn tcp(&self) -> &std::net::TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(s) => &s.sock,
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(s) => s.flush(),
            Socket::Tls(s) => s.flush(),
        }
    }
}

/// An upgraded connection handed over: its socket, the bytes the HTTP
/// stack had read past the upgrade request, its place in the per-address
/// cap (given back when this is dropped), and the counter of connections
/// closed for being idle ([`crate::IDLE_TIMEOUT`]), which its new owner now enforces.
#[derive(Debug)]
pub struct Handoff {
    pub socket: Socket,
    pub read_ahead: Vec<u8>,
    pub slot: Slot,
    pub idle_timed_out: prometheus::IntCounter,
}

impl GuardedStream {
    /// The socket under this stream, out of the async runtime (its deadline
    /// goes: the new owner keeps its own).
    fn into_socket(self) -> io::Result<(Socket, Slot)> {
        let socket = match self.inner {
            Transport::Plain(tcp) => Socket::Plain(tcp.into_std()?),
            Transport::Tls(tls) => {
                let (tcp, session) = tls.into_inner();
                Socket::Tls(Box::new(rustls::StreamOwned::new(session, tcp.into_std()?)))
            }
        };
        socket.tcp().set_nonblocking(true)?;
        Ok((socket, self._slot))
    }
}

/// The socket of an upgraded connection served by [`serve`].
pub fn take_upgraded(upgraded: hyper::upgrade::Upgraded) -> io::Result<Handoff> {
    let parts = upgraded
        .downcast::<TokioIo<GuardedStream>>()
        .map_err(|_| io::Error::other("the upgraded connection is not a guarded stream"))?;
    let stream = parts.io.into_inner();
    let idle_timed_out = stream.timed_out.with_label_values(&["idle"]);
    let (socket, slot) = stream.into_socket()?;
    Ok(Handoff { socket, read_ahead: parts.read_buf.to_vec(), slot, idle_timed_out })
}

/// Serves `app` on `listener` over HTTP/1.1 with upgrades, each request
/// carrying its peer's `ConnectInfo<SocketAddr>`, until `shutdown`; then
/// asks open connections to finish their request and waits for them.
pub async fn serve(mut listener: GuardedListener, app: axum::Router, shutdown: impl Future<Output = ()>) {
    let (signal, watched) = tokio::sync::watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let (app, mut stop) = (app.clone(), watched.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(request)
            });
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).with_upgrades();
            let mut connection = pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(watched);
    let _ = signal.send(());
    // Every connection task holds a receiver until it ends.
    signal.closed().await;
}
