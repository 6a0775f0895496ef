//! A TCP proxy that can be cut: the drills and tests make a server
//! unreachable (connections reset, new ones refused) while it keeps running,
//! then open the same address again. Opened with [`Flaws`], it is a slow,
//! lossy network instead: every byte held back by a delay with jitter (in
//! order, as TCP keeps it), and a share of the connections reset. Opened
//! over several upstreams, it is a load balancer: each connection to the
//! next one in turn, skipping those that refuse it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a flawed gate does to the connections through it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flaws {
    /// Each chunk of bytes, each way, waits `delay` ± `jitter` (uniform).
    pub delay: Duration,
    pub jitter: Duration,
    /// The share of connections (0 to 1) reset in each `reset_within` of
    /// their life, at a moment drawn within it: a network that stays flaky,
    /// not one that spares a connection once it lasted.
    pub reset_fraction: f64,
    pub reset_within: Duration,
}

impl Flaws {
    /// Issue 21's flaky network: 100 ms ± 50 ms each way, 5 % of connections
    /// reset in every 10 s.
    pub const FLAKY: Flaws = Flaws {
        delay: Duration::from_millis(100),
        jitter: Duration::from_millis(50),
        reset_fraction: 0.05,
        reset_within: Duration::from_secs(10),
    };
}

/// Forwards `127.0.0.1:port` (or another address it listens on) to an upstream address until cut.
#[derive(Debug)]
pub struct Gate {
    pub port: u16,
    listen: SocketAddr,
    upstreams: Arc<[SocketAddr]>,
    flaws: Option<Flaws>,
    cut: CancellationToken,
    /// Connections a flawed gate reset.
    resets: Arc<AtomicU64>,
}

impl Gate {
    /// Opens the gate on `port` (0 picks a free one).
    pub async fn open(port: u16, upstream: SocketAddr) -> std::io::Result<Self> {
        Self::open_with(SocketAddr::from(([127, 0, 0, 1], port)), Arc::new([upstream]), None).await
    }

    /// Opens a gate on `listen` (port 0 picks a free one) that is a slow, lossy network ([`Flaws`]).
    pub async fn open_flawed(listen: SocketAddr, upstream: SocketAddr, flaws: Flaws) -> std::io::Result<Self> {
        Self::open_with(listen, Arc::new([upstream]), Some(flaws)).await
    }

    /// Opens a load balancer on `127.0.0.1:port` (0 picks a free one) over
    /// `upstreams`: each connection goes to the next one in turn, or past it
    /// to the one after if it refuses the connection (a replica that is down).
    pub async fn open_balanced(port: u16, upstreams: &[SocketAddr]) -> std::io::Result<Self> {
        if upstreams.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a balancer needs an upstream"));
        }
        Self::open_with(SocketAddr::from(([127, 0, 0, 1], port)), upstreams.into(), None).await
    }

    async fn open_with(
        listen: SocketAddr,
        upstreams: Arc<[SocketAddr]>,
        flaws: Option<Flaws>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (cut, resets) = (CancellationToken::new(), Arc::new(AtomicU64::new(0)));
        tokio::spawn(forward(listener, upstreams.clone(), flaws, cut.clone(), resets.clone()));
        Ok(Self { port: listen.port(), listen, upstreams, flaws, cut, resets })
    }

    /// Connections reset so far (by a flawed gate).
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Closes every connection through the gate and stops listening.
    pub fn cut(&self) {
        self.cut.cancel();
    }

    /// Opens the gate again on the same port, with the same flaws.
    pub async fn reopen(&mut self) -> std::io::Result<()> {
        self.cut.cancel();
        *self = Self::open_with(self.listen, self.upstreams.clone(), self.flaws).await?;
        Ok(())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// A small generator for the flaws' draws: xorshift64*, seeded per connection.
#[derive(Debug, Clone)]
struct Draws(u64);

impl Draws {
    fn seeded(salt: u64) -> Self {
        let nanos = respawn_api::clock::unix_nanos();
        Self((nanos as u64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn delay(&mut self, flaws: &Flaws) -> Duration {
        let spread = flaws.jitter.as_secs_f64() * (2.0 * self.next() - 1.0);
        Duration::from_secs_f64((flaws.delay.as_secs_f64() + spread).max(0.0))
    }
}

/// The first of `upstreams` from the `turn`th on that takes a connection.
async fn connect_in_turn(upstreams: &[SocketAddr], turn: u64) -> Option<TcpStream> {
    for i in 0..upstreams.len() {
        let upstream = upstreams[(turn as usize + i) % upstreams.len()];
        if let Ok(server) = TcpStream::connect(upstream).await {
            return Some(server);
        }
    }
    None
}

async fn forward(
    listener: TcpListener,
    upstreams: Arc<[SocketAddr]>,
    flaws: Option<Flaws>,
    cut: CancellationToken,
    resets: Arc<AtomicU64>,
) {
    let mut accepted_count = 0u64;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cut.cancelled() => return,
        };
        let Ok((client, _)) = accepted else { continue };
        accepted_count += 1;
        let cut = cut.clone();
        let draws = Draws::seeded(accepted_count);
        let (resets, upstreams) = (resets.clone(), upstreams.clone());
        tokio::spawn(async move {
            let Some(server) = connect_in_turn(&upstreams, accepted_count).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            match flaws {
                None => pass(client, server, cut).await,
                Some(flaws) => {
                    if pass_flawed(client, server, flaws, draws, cut).await {
                        resets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
}

async fn pass(mut client: TcpStream, mut server: TcpStream, cut: CancellationToken) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.cancelled() => {}
    }
}

/// Whether it reset the connection.
async fn pass_flawed(
    mut client: TcpStream,
    mut server: TcpStream,
    flaws: Flaws,
    draws: Draws,
    cut: CancellationToken,
) -> bool {
    // Linger 0: closing sends a reset, not a goodbye (set up front: the halves below borrow the streams).
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    // Borrowed halves: owned ones would send a FIN when dropped, before the reset.
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let up = delayed_copy(client_read, server_write, flaws, draws.clone());
    let down = delayed_copy(server_read, client_write, flaws, Draws::seeded(draws.0));
    let mut reset_draws = Draws::seeded(draws.0 ^ 0x5DEE_CE66);
    let reset_time = async move {
        let mut window = Instant::now();
        loop {
            if reset_draws.next() < flaws.reset_fraction {
                tokio::time::sleep_until(window + flaws.reset_within.mul_f64(reset_draws.next())).await;
                return;
            }
            window += flaws.reset_within;
            tokio::time::sleep_until(window).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => false,
        _ = reset_time => true,
        _ = cut.cancelled() => false,
    }
}

/// Copies `from` into `to`, each chunk held back by a delay drawn for it,
/// never overtaking the one before. At most 256 chunks wait at once (4 MiB).
async fn delayed_copy(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    flaws: Flaws,
    mut draws: Draws,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0; 16 * 1024];
        let mut last_due = Instant::now();
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            last_due = last_due.max(Instant::now() + draws.delay(&flaws));
            if tx.send((last_due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback, answering every connection.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_flawed_gate_delays_each_way_in_order_and_resets_its_share() {
        let upstream = echo().await;
        let slow = Flaws { reset_fraction: 0.0, ..Flaws::FLAKY };
        let gate = Gate::open_flawed(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, slow).await.expect("gate");
        let mut s = TcpStream::connect(("127.0.0.1", gate.port)).await.expect("connect");
        let sent = Instant::now();
        for part in [&b"one "[..], b"two ", b"three"] {
            s.write_all(part).await.expect("write");
        }
        let mut got = vec![0; 13];
        s.read_exact(&mut got).await.expect("echo");
        let round_trip = sent.elapsed();
        assert_eq!(&got, b"one two three", "in order");
        // Each way waits at least delay - jitter: 50 ms.
        assert!(round_trip >= Duration::from_millis(100), "{round_trip:?}");

        let slow_resets = gate.resets();
        let always = Flaws { reset_fraction: 1.0, reset_within: Duration::from_millis(200), ..slow };
        let gate = Gate::open_flawed(SocketAddr::from(([127, 0, 0, 1], 0)), upstream, always).await.expect("gate");
        let mut s = TcpStream::connect(("127.0.0.1", gate.port)).await.expect("connect");
        let mut buf = [0; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("ended in time");
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "reset, not closed: {read:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while gate.resets() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((gate.resets(), slow_resets), (1, 0), "the resets are counted");
    }

    /// A server that says `tag` to every connection, until the handle is aborted.
    async fn teller(tag: u8) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(&[tag]).await;
            }
        });
        (addr, task)
    }

    async fn answer(port: u16) -> u8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let mut tag = [0];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut tag)).await.expect("in time").expect("a tag");
        tag[0]
    }

    #[tokio::test]
    async fn a_balanced_gate_takes_turns_and_skips_an_upstream_that_is_down() {
        let ((a, a_task), (b, _b_task)) = (teller(b'a').await, teller(b'b').await);
        let gate = Gate::open_balanced(0, &[a, b]).await.expect("gate");
        let mut tags = Vec::new();
        for _ in 0..4 {
            tags.push(answer(gate.port).await);
        }
        tags.sort_unstable();
        assert_eq!(tags, b"aabb", "in turn");
        a_task.abort();
        let _ = a_task.await;
        for _ in 0..4 {
            assert_eq!(answer(gate.port).await, b'b', "the one still up");
        }
        assert!(Gate::open_balanced(0, &[]).await.is_err(), "no upstream, no balancer");
    }
}
