//! The platform server's registry: a zone server started with `--platform`
//! heartbeats into it (ready, then draining), and leaves it within the
//! entry's time to live when killed. Real processes, real sockets; the
//! platform server runs without MySQL here (it does not need it to start).

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_api::http;
use serde_json::Value;
use support::{Client, Platform, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG, TOKEN_KEY};

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

fn redis_url() -> String {
    std::env::var("RESPAWN_TEST_REDIS_URL")
        .expect("RESPAWN_TEST_REDIS_URL is not set: run the tests through scripts/test or scripts/services run")
}

fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{tag}-{}-{nanos}", std::process::id())
}

async fn login_status(platform: &str, body: &str) -> Result<u16> {
    Ok(http::exchange(platform, "POST", "/v1/sessions", None, Some(body)).await?.status)
}

#[tokio::test]
async fn players_log_in_through_the_platform_land_on_ready_servers_and_bans_keep_them_out() -> Result<()> {
    let platform_started = Instant::now();
    let (redis, prefix) = (redis_url(), unique_prefix("login"));
    let platform = Platform::start_with(
        "127.0.0.1:1",
        "mysql://root@127.0.0.1:1/none",
        "login-test",
        &[
            "--server-token",
            SERVER_TOKEN,
            "--token-key",
            TOKEN_KEY,
            "--redis-url",
            &redis,
            "--redis-prefix",
            &prefix,
            "--login-per-minute",
            "30",
        ],
    )?;
    let addr = platform.addr.to_string();
    platform.wait_healthy().await?;
    let ann = r#"{"name":"ann","zone":"meadow"}"#;
    assert_eq!(login_status(&addr, ann).await?, 503, "no server yet");
    for bad in [
        "not json",
        r#"{"name":"a b","zone":"meadow"}"#,
        r#"{"name":"x' OR 1=1; --","zone":"meadow"}"#,
        r#"{"name":"ann","zone":"meadow","admin":true}"#,
        r#"{"name":"ann"}"#,
    ] {
        assert_eq!(login_status(&addr, bad).await?, 400, "{bad}");
    }
    let huge = format!(r#"{{"name":"ann","zone":"{}"}}"#, "m".repeat(20_000));
    assert_eq!(login_status(&addr, &huge).await?, 413, "bodies over 16 KiB are refused unread");

    let args = ["--platform", addr.as_str(), "--server-token", SERVER_TOKEN];
    let (a, b) = (ZoneProcess::start_with_args(TEST_CONFIG, &args)?, ZoneProcess::start_with_args(TEST_CONFIG, &args)?);
    wait_for(&addr, "both zone servers", |l| l.len() == 2).await?;

    let grant = respawn_client::login(&addr, "ann", "meadow").await?;
    assert!([a.ws_url(), b.ws_url()].contains(&grant.address), "{} is one of the servers", grant.address);
    assert_eq!(grant.player_id, respawn_token::player_id_for_name("ann"));
    let claims = respawn_token::TokenKey::new(TOKEN_KEY.as_bytes())?.verify(&grant.token, 0)?;
    assert_eq!((claims.player_id, claims.name.as_str()), (grant.player_id, "ann"));
    let mut ann_client = Client::connect(&grant.address).await?;
    ann_client.conn.join(grant.token.clone(), None, "meadow", Duration::from_secs(5)).await?;

    // A bot that knows only the platform server gets in by itself.
    let bots = respawn_client::Fleet::spawn(
        respawn_client::Access::Login { platform: addr.clone() },
        &["caverns".to_owned()],
        1,
        "loginbot",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while bots.stats.connected.load(std::sync::atomic::Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "the bot never got in through the login");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A draining server gets no new players (a player keeps it draining).
    let (_holder, _) = Client::join(&a.ws_url(), 78, "holder", "caverns").await?;
    let (code, _) = http::request(&a.addr.to_string(), "POST", "/admin/drain", Some(ADMIN_TOKEN)).await?;
    assert_eq!(code, 202);
    wait_for(&addr, "server a draining", |l| {
        l.iter().any(|s| s["address"] == a.ws_url().as_str() && s["state"] == "draining")
    })
    .await?;
    for n in 0..8 {
        let grant = respawn_client::login(&addr, &format!("newcomer{n}"), "meadow").await?;
        assert_eq!(grant.address, b.ws_url(), "newcomer{n} sent to the ready server");
    }

    // A ban (written where the operations API writes it) reaches the zone
    // servers with their next heartbeat: the player is kicked, refused at
    // join with a still valid token, and refused at login.
    let ops = respawn_store::redis_store::RedisOps::new(respawn_store::redis_store::RedisConn::new(&redis, &prefix)?);
    let ban = respawn_store::ops::Ban { player: grant.player_id, reason: "test".into(), by: "test".into(), at_ms: 1 };
    respawn_store::ops::OpsStore::ban(&ops, ban).await?;
    let kicked = ann_client.closed(Duration::from_secs(5)).await?;
    assert_eq!(kicked.code, respawn_proto::CloseCode::Kicked.code(), "{kicked:?}");
    let mut again = Client::connect(&grant.address).await?;
    again.conn.send(join_body(&grant.token)).await?;
    let refused = again.closed(Duration::from_secs(5)).await?;
    assert_eq!(refused.code, respawn_proto::CloseCode::Banned.code(), "{refused:?}");
    assert_eq!(login_status(&addr, ann).await?, 403);

    // A login flood from one address: refused with 429 and Retry-After, nothing issued.
    // (The bot stops first: its own logins would count.)
    bots.stop().await;
    let issued_before =
        support::metric(&http::request(&addr, "GET", "/metrics", None).await?.1, "respawn_platform_logins_total");
    let (mut ok, mut limited) = (0, 0);
    for n in 0..40 {
        let body = format!(r#"{{"name":"flood{n}","zone":"meadow"}}"#);
        let answer = http::exchange(&addr, "POST", "/v1/sessions", None, Some(&body)).await?;
        match answer.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let retry: u64 = answer.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
                assert!(retry >= 1, "Retry-After is a whole number of seconds: {:?}", answer.headers);
                assert!(answer.body.contains("too many login requests"), "{}", answer.body);
            }
            other => bail!("flood login answered {other}: {}", answer.body),
        }
    }
    // At most the burst (30) plus what refilled since the platform started (one per 2 s) got through.
    let most = 30.0 + platform_started.elapsed().as_secs_f64() / 2.0 + 1.0;
    assert!(limited >= 1 && f64::from(ok) <= most, "{limited} of 40 refused, {ok} allowed (at most {most:.0})");
    let issued_after =
        support::metric(&http::request(&addr, "GET", "/metrics", None).await?.1, "respawn_platform_logins_total");
    assert_eq!(issued_after.unwrap_or(0.0) - issued_before.unwrap_or(0.0), f64::from(ok), "429s issued nothing");
    Ok(())
}

fn join_body(token: &str) -> respawn_proto::client_message::Body {
    respawn_proto::client_message::Body::Join(respawn_proto::Join {
        protocol_version: respawn_proto::PROTOCOL_VERSION,
        token: token.to_owned(),
        zone: "meadow".into(),
        resume_token: String::new(),
    })
}
