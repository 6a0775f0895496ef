//! Built-in alerting end to end, with real processes: a zone server made slow
//! on purpose (the test-only `[testing] extra_tick_ms`) makes the platform
//! server fire TickOver100ms after its 30 s; killing it fires GameServerDown
//! (and resolves the slow ticks); a server back at the same address resolves
//! it. A webhook receiver that refuses every first delivery sees each
//! transition accepted exactly once, after a retry.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::http;
use serde_json::Value;
use support::{Platform, ZoneProcess, TEST_CONFIG};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "alerting-bootstrap-admin-token";

/// Deliveries by notification id: (attempts, accepted payload texts).
type Deliveries = Arc<Mutex<BTreeMap<String, (u32, Vec<String>)>>>;

/// A webhook that answers 500 to the first attempt of every notification, 200 after.
async fn receiver() -> Result<(std::net::SocketAddr, Deliveries)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let deliveries: Deliveries = Arc::default();
    let seen = deliveries.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then the body by its length.
                let (head, body) = loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                // Header names are case-insensitive (the client sends them in lowercase).
                let id = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("x-respawn-notification-id"))
                    .map_or("none", |(_, value)| value.trim())
                    .to_owned();
                let status = {
                    let Ok(mut d) = seen.lock() else { return };
                    let entry = d.entry(id).or_default();
                    entry.0 += 1;
                    if entry.0 == 1 {
                        "500 Internal Server Error"
                    } else {
                        let text = serde_json::from_str::<Value>(&body)
                            .ok()
                            .and_then(|v| v["text"].as_str().map(str::to_owned));
                        entry.1.push(text.unwrap_or_default());
                        "200 OK"
                    }
                };
                let _ = stream
                    .write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            });
        }
    });
    Ok((addr, deliveries))
}

async fn alerts(platform: &str) -> Result<Value> {
    let (status, body) = http::request(platform, "GET", "/v1/alerts", Some(ADMIN)).await?;
    if status != 200 {
        bail!("GET /v1/alerts answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

fn has(list: &Value, name: &str, state: &str) -> bool {
    list.as_array().is_some_and(|l| l.iter().any(|a| a["name"] == name && a["state"] == state))
}

async fn wait_alerts(platform: &str, what: &str, limit: Duration, want: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let now = alerts(platform).await?;
        if want(&now) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("never {what}: {now}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_slow_zone_and_a_dead_server_fire_notify_once_and_resolve() -> Result<()> {
    let (hook, deliveries) = receiver().await?;
    let platform = Platform::start_with(
        "127.0.0.1:1",
        "mysql://root@127.0.0.1:1/none",
        "alerting-test",
        &[
            "--server-key",
            support::SERVER_KEY,
            "--admin-token",
            ADMIN,
            "--alert-webhook",
            &format!("http://{hook}/hook"),
        ],
    )?;
    platform.wait_healthy().await?;
    let api = platform.addr.to_string();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let credential = support::credential("slow-zone");
    let heartbeat = ["--platform", api.as_str(), "--server-token", &credential];
    let slow = format!("{TEST_CONFIG}\n[testing]\nextra_tick_ms = 150\n");
    let zone = ZoneProcess::start_at(&slow, listen, &heartbeat)?;
    let address = zone.ws_url();

    // Slow ticks: pending at once, firing once they held for 30 s.
    wait_alerts(&api, "TickOver100ms pending", Duration::from_secs(15), |a| {
        has(&a["pending"], "TickOver100ms", "pending")
    })
    .await?;
    let started = Instant::now();
    let now = wait_alerts(&api, "TickOver100ms firing", Duration::from_secs(60), |a| {
        has(&a["firing"], "TickOver100ms", "firing")
    })
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "held for its 30 s first ({:?} after pending)",
        started.elapsed()
    );
    let firing = now["firing"].as_array().context("firing")?;
    let slow_alert = firing.iter().find(|a| a["name"] == "TickOver100ms").context("the alert")?;
    assert_eq!(slow_alert["severity"], "critical");
    assert_eq!(slow_alert["runbook"], "docs/runbook.md#slow-ticks");
    assert!(
        slow_alert["summary"].as_str().is_some_and(|s| s.contains("meadow") || s.contains("caverns")),
        "{slow_alert}"
    );

    // The server dies: down after 15 s; its slow ticks resolve.
    drop(zone);
    wait_alerts(&api, "GameServerDown firing", Duration::from_secs(30), |a| {
        has(&a["firing"], "GameServerDown", "firing") && has(&a["feed"], "TickOver100ms", "resolved")
    })
    .await?;
    // Back at the same address, at normal speed: resolved.
    let _back = ZoneProcess::start_at(TEST_CONFIG, listen, &heartbeat)?;
    let now = wait_alerts(&api, "GameServerDown resolved", Duration::from_secs(15), |a| {
        has(&a["feed"], "GameServerDown", "resolved")
    })
    .await?;
    assert!(!has(&now["firing"], "GameServerDown", "firing"));

    // Every transition reached the webhook exactly once, after one refused attempt.
    let wanted = |d: &BTreeMap<String, (u32, Vec<String>)>| {
        ["TickOver100ms", "GameServerDown"].iter().all(|name| {
            ["firing", "resolved"].iter().all(|state| {
                d.iter().any(|(id, (_, accepted))| {
                    id.starts_with(&format!("{name}|")) && id.ends_with(state) && !accepted.is_empty()
                })
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let snapshot = deliveries.lock().map(|d| d.clone()).unwrap_or_default();
        if wanted(&snapshot) {
            for (id, (attempts, accepted)) in
                snapshot.iter().filter(|(id, _)| id.starts_with("TickOver100ms|") || id.starts_with("GameServerDown|"))
            {
                assert_eq!(accepted.len(), 1, "{id} accepted once");
                assert_eq!(*attempts, 2, "{id}: refused once, then retried once");
                let state = if id.ends_with("resolved") { "[RESOLVED]" } else { "[FIRING]" };
                assert!(
                    accepted[0].starts_with(state) && accepted[0].contains("runbook: docs/runbook.md#"),
                    "{}",
                    accepted[0]
                );
            }
            let down = snapshot.keys().filter(|id| id.starts_with("GameServerDown|")).count();
            assert_eq!(down, 2, "one firing and one resolved notification for the dead server: {snapshot:?}");
            assert!(snapshot.keys().any(|id| id.contains(&address)), "keyed by the server's address");
            break;
        }
        if Instant::now() > deadline {
            bail!("the webhook did not get every transition: {snapshot:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http::scrape(&api).await?;
    assert!(
        support::metric(&metrics, r#"respawn_platform_alert_notifications_total{result="sent"}"#).unwrap_or(0.0) >= 4.0
    );
    assert!(
        support::metric(&metrics, r#"respawn_platform_alert_notifications_total{result="retried"}"#).unwrap_or(0.0)
            >= 4.0
    );
    Ok(())
}
