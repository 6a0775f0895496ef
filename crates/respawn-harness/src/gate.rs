//! A TCP proxy that can be cut: the drills and tests make a server
//! unreachable (connections reset, new ones refused) while it keeps running,
//! then open the same address again.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards `127.0.0.1:port` to an upstream address until cut.
#[derive(Debug)]
pub struct Gate {
    pub port: u16,
    upstream: SocketAddr,
    cut: CancellationToken,
}

impl Gate {
    /// Opens the gate on `port` (0 picks a free one).
    pub async fn open(port: u16, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let cut = CancellationToken::new();
        tokio::spawn(forward(listener, upstream, cut.clone()));
        Ok(Self { port, upstream, cut })
    }

    /// Closes every connection through the gate and stops listening.
    pub fn cut(&self) {
        self.cut.cancel();
    }

    /// Opens the gate again on the same port.
    pub async fn reopen(&mut self) -> std::io::Result<()> {
        self.cut.cancel();
        *self = Self::open(self.port, self.upstream).await?;
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

async fn forward(listener: TcpListener, upstream: SocketAddr, cut: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cut.cancelled() => return,
        };
        let Ok((mut client, _)) = accepted else { continue };
        let cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.cancelled() => {}
            }
        });
    }
}
