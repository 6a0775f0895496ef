//! Connection floods and slowloris against the real zone server and platform
//! server: one address gets its share of connections (the rest are told 429
//! and closed), players already in keep playing, and connections that
//! trickle their request head are closed once its deadline passes.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_proto::server_message::Body as S;
use support::{metric, scrape, Client, Platform, ZoneProcess, TEST_CONFIG};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` connections at once; returns the ones admitted (no answer yet)
/// and how many were refused with a 429 and closed.
async fn flood(addr: SocketAddr, n: usize) -> Result<(Vec<TcpStream>, usize)> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(TcpStream::connect(addr).await?);
    }
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for mut s in all {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 429") => refused += 1,
            Ok(other) => bail!("a flooding connection got {other:?}"),
            Err(_) => admitted.push(s),
        }
    }
    Ok((admitted, refused))
}

/// Trickles a request head into each connection a byte a second; returns
/// how long the server took to close the last of them.
async fn slowloris(mut conns: Vec<TcpStream>, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-slow: ";
    let mut sent = 0;
    while !conns.is_empty() {
        if started.elapsed() > limit {
            bail!("{} slow connections still open after {limit:?}", conns.len());
        }
        let byte = [head.get(sent).copied().unwrap_or(b'a')];
        sent += 1;
        let mut open = Vec::new();
        for mut c in conns {
            let mut buf = [0u8; 64];
            let closed = match tokio::time::timeout(Duration::from_millis(5), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(_)) => bail!("a slow connection got an answer before its head was complete"),
                Err(_) => c.write_all(&byte).await.is_err(),
            };
            if !closed {
                open.push(c);
            }
        }
        conns = open;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_zone_server_gives_one_address_its_share_and_closes_slow_heads() -> Result<()> {
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--connections-per-ip", "8"])?;
    let (mut player, _) = Client::join(&zone.ws_url(), 1, "steady", "meadow").await?;

    let (admitted, refused) = flood(zone.addr, 200).await?;
    assert_eq!((admitted.len(), refused), (7, 193), "8 per address, one of them the player's");
    // The player kept its connection and its world goes on, tick after tick.
    let tick = |b: &S| match b {
        S::Update(u) => Some(u.tick),
        _ => None,
    };
    let first = player.next_matching(Duration::from_secs(2), tick).await?;
    let later = player.next_matching(Duration::from_secs(2), |b| tick(b).filter(|t| *t > first + 5)).await?;
    assert!(later > first);
    // No more room for this address: a new player is refused too.
    assert!(Client::join(&zone.ws_url(), 2, "late", "meadow").await.is_err(), "the address is full");

    let took = slowloris(admitted, Duration::from_secs(15)).await?;
    assert!(took >= Duration::from_secs(8), "closed at the head deadline, not before: {took:?}");
    let (_late, welcome) = Client::join(&zone.ws_url(), 2, "late", "meadow").await?;
    assert_eq!(welcome.zone, "meadow", "the closed connections gave their places back");
    let text = scrape(zone.addr).await?;
    assert!(metric(&text, "respawn_zone_connections_refused_total").is_some_and(|n| n >= 194.0), "{text}");
    let timed_out = metric(&text, "respawn_zone_connections_timed_out_total{phase=\"request_head\"}");
    assert_eq!(timed_out, Some(7.0), "{text}");
    player.next_matching(Duration::from_secs(2), tick).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_platform_api_gives_one_address_its_share_and_closes_slow_heads() -> Result<()> {
    // Login, registry and metrics need neither Kafka nor MySQL: nothing listens on port 1.
    let platform =
        Platform::start_with("127.0.0.1:1", "mysql://root@127.0.0.1:1/none", "floods", &["--connections-per-ip", "6"])?;
    platform.wait_healthy().await?;
    let (admitted, refused) = flood(platform.addr, 100).await?;
    assert_eq!((admitted.len(), refused), (6, 94));
    let addr = platform.addr.to_string();
    let full = respawn_api::http::request(&addr, "GET", "/healthz", None).await;
    assert!(!matches!(full, Ok((200, _))), "no room for another connection: {full:?}");

    slowloris(admitted, Duration::from_secs(15)).await?;
    let (code, _) = respawn_api::http::request(&addr, "GET", "/healthz", None).await?;
    assert_eq!(code, 200, "served again once the slow connections were closed");
    let text = scrape(platform.addr).await?;
    assert!(metric(&text, "respawn_platform_connections_refused_total").is_some_and(|n| n >= 95.0), "{text}");
    let timed_out = metric(&text, "respawn_platform_connections_timed_out_total{phase=\"request_head\"}");
    assert_eq!(timed_out, Some(6.0), "{text}");
    Ok(())
}
