//! Per-address limits behind a load balancer: the client's address comes
//! from `X-Forwarded-For` only when the peer is a listed proxy; from anyone
//! else the header is ignored, so it cannot be used to dodge the limits.

use anyhow::{ensure, Result};
use respawn_api::http;
use respawn_platform::http::HttpContext;
use respawn_platform::PlatformServer;
use respawn_store::ratelimit::Quota;

/// The statuses of two guest sign-ups from each of three clients behind one
/// proxy (this process, at 127.0.0.1), with the platform trusting it or not.
async fn sign_ups_behind_a_proxy(trusted: bool) -> Result<Vec<u16>> {
    let mut context = HttpContext::with_stores(None, "limits-test")?;
    context.limits.login_per_ip = Quota { burst: 2, period: std::time::Duration::from_secs(60) };
    if trusted {
        context.limits.trusted_proxies = respawn_net::TrustedProxies::new(vec!["127.0.0.1".parse()?]);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform = PlatformServer::new(context).without_fleet_watcher().start(listener)?;
    let url = http::parse_url(&format!("http://{}/v1/accounts/guest", platform.addr())).map_err(anyhow::Error::msg)?;
    let mut statuses = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        for _ in 0..2 {
            // What a client claims is on the left; the proxy appends what it saw.
            let forwarded = format!("10.9.9.9, {client}");
            statuses.push(http::post_json(&url, "{}", &[("x-forwarded-for", &forwarded)]).await?.status);
        }
    }
    platform.shutdown().await.map_err(anyhow::Error::msg)?;
    Ok(statuses)
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy() -> Result<()> {
    let trusted = sign_ups_behind_a_proxy(true).await?;
    ensure!(trusted.iter().all(|s| *s != 429), "each client within its own limit: {trusted:?}");
    let untrusted = sign_ups_behind_a_proxy(false).await?;
    ensure!(untrusted.iter().filter(|s| **s == 429).count() == 4, "one address, one limit: {untrusted:?}");
    Ok(())
}
