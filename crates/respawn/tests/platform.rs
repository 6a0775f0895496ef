//! The platform server's registry: a zone server started with `--platform`
//! heartbeats into it (ready, then draining), and leaves it within the
//! entry's time to live when killed. Real processes, real sockets; the
//! platform server runs without MySQL here (it does not need it to start).

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_client::http;
use serde_json::Value;
use support::{Client, Platform, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG};

const SERVER_TOKEN: &str = "integration-server-token";

async fn servers(platform: &str) -> Result<Vec<Value>> {
    let (code, body) = http::request(platform, "GET", "/v1/servers", Some(SERVER_TOKEN)).await?;
    if code != 200 {
        bail!("GET /v1/servers answered {code}: {body}");
    }
    Ok(serde_json::from_str::<Vec<Value>>(&body)?)
}

/// Polls the registry until `want` holds (10 s at most).
async fn wait_for(platform: &str, what: &str, want: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = servers(platform).await?;
        if want(&list) {
            return Ok(list);
        }
        if Instant::now() > deadline {
            bail!("registry never showed {what}: {list:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn zone_servers_heartbeat_into_the_registry_and_leave_it_when_they_die() -> Result<()> {
    // No Kafka or MySQL behind this platform server: nothing listens on port 1.
    let platform = Platform::start_with(
        "127.0.0.1:1",
        "mysql://root@127.0.0.1:1/none",
        "registry-test",
        &["--server-token", SERVER_TOKEN],
    )?;
    let addr = platform.addr.to_string();
    platform.wait_healthy().await?;
    // The registry is closed to anyone without the server token.
    assert_eq!(http::request(&addr, "GET", "/v1/servers", None).await?.0, 401);
    assert_eq!(http::request(&addr, "GET", "/v1/servers", Some("wrong")).await?.0, 401);
    let forged = r#"{"address":"ws://evil/ws","zones":[],"state":"ready","version":"x"}"#;
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/evil", Some("wrong"), forged).await?.0, 401);
    let bad = r#"{"address":"ws://a/ws","zones":["a,b"],"state":"ready","version":"x"}"#;
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/x", Some(SERVER_TOKEN), bad).await?.0, 400);
    let unknown = r#"{"address":"ws://a/ws","zones":[],"state":"asleep","version":"x"}"#;
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/x", Some(SERVER_TOKEN), unknown).await?.0, 400);
    assert!(servers(&addr).await?.is_empty(), "nothing refused was registered");

    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", &addr, "--server-token", SERVER_TOKEN])?;
    let ws = zone.ws_url();
    let list = wait_for(&addr, "the zone server", |l| l.len() == 1).await?;
    assert_eq!(list[0]["address"], ws.as_str());
    assert_eq!(list[0]["zones"], serde_json::json!(["meadow", "caverns"]));
    assert_eq!(list[0]["state"], "ready");

    // Draining (a player keeps the drain waiting): the registry says so.
    let (_client, _) = Client::join(&ws, 77, "stays", "meadow").await?;
    let (code, _) = http::request(&zone.addr.to_string(), "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    assert_eq!(code, 202);
    wait_for(&addr, "the zone server draining", |l| l.len() == 1 && l[0]["state"] == "draining").await?;

    // Killed: no more heartbeats, gone within the entry's 3 s.
    let killed = Instant::now();
    drop(zone);
    wait_for(&addr, "the dead zone server gone", <[Value]>::is_empty).await?;
    assert!(killed.elapsed() < Duration::from_secs(5), "left within {:?}", killed.elapsed());
    Ok(())
}
