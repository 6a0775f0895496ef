//! The platform server's registry: a zone server started with `--platform`
//! heartbeats into it (ready, then draining), and leaves it within the
//! entry's time to live when killed; players sign in to accounts kept in
//! MySQL and join zones through it. Real processes, real sockets.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_api::http::{self, CallError};
use respawn_api::players::{GuestSignUp, PlayerApi, SetCredentials, SignIn, SignUp};
use serde_json::Value;
use support::{Client, Database, Platform, ZoneProcess, ADMIN_TOKEN, TEST_CONFIG, TOKEN_KEY};

const OPERATOR: &str = "operator-admin-token-of-the-login-test";

async fn servers(platform: &str) -> Result<Vec<Value>> {
    let (code, body) = http::request(platform, "GET", "/v1/servers", Some(&support::credential("reader"))).await?;
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
        &["--server-key", support::SERVER_KEY],
    )?;
    let addr = platform.addr.to_string();
    platform.wait_healthy().await?;
    // The registry is closed to anyone without a server credential.
    assert_eq!(http::request(&addr, "GET", "/v1/servers", None).await?.0, 401);
    assert_eq!(http::request(&addr, "GET", "/v1/servers", Some("wrong")).await?.0, 401);
    let forged = r#"{"address":"ws://evil/ws","zones":[],"state":"ready","version":"x"}"#;
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/evil", Some("wrong"), forged).await?.0, 401);
    let bad = r#"{"address":"ws://a/ws","zones":["a,b"],"state":"ready","version":"x"}"#;
    let x = support::credential("x");
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/x", Some(&x), bad).await?.0, 400);
    let unknown = r#"{"address":"ws://a/ws","zones":[],"state":"asleep","version":"x"}"#;
    assert_eq!(http::request_json(&addr, "PUT", "/v1/servers/x", Some(&x), unknown).await?.0, 400);
    assert!(servers(&addr).await?.is_empty(), "nothing refused was registered");

    let credential = support::credential("registry-zone");
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", &addr, "--server-token", &credential])?;
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
    format!("{tag}-{}", respawn_harness::unique_suffix())
}

async fn post_status(platform: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let answer = http::exchange(platform, "POST", path, None, Some(body)).await?;
    Ok((answer.status, answer.body))
}

/// The status of a refused call (0 if it was not refused).
fn refused<T>(result: Result<T, CallError>) -> u16 {
    result.err().and_then(|e| e.status()).unwrap_or(0)
}

fn refusal<T: std::fmt::Debug>(result: Result<T, CallError>) -> String {
    match result {
        Err(CallError::Refused { answer, .. }) => answer,
        other => format!("not refused: {other:?}"),
    }
}

async fn sign_ins_ok(platform: &str) -> Result<f64> {
    let samples = respawn_api::prom::parse(&http::scrape(platform).await?);
    Ok(respawn_api::prom::sum(&samples, "respawn_platform_sign_ins_total", &[("result", "ok")]))
}

#[tokio::test]
async fn players_sign_in_to_accounts_land_on_ready_servers_and_bans_and_disabling_keep_them_out() -> Result<()> {
    let platform_started = Instant::now();
    let (redis, prefix) = (redis_url(), unique_prefix("login"));
    let db = Database::create("accounts").await?;
    // MySQL holds the accounts; no Kafka behind this platform server (nothing listens on port 1).
    let platform = Platform::start_with(
        "127.0.0.1:1",
        &db.url(),
        "login-test",
        &[
            "--server-key",
            support::SERVER_KEY,
            "--token-key",
            TOKEN_KEY,
            "--redis-url",
            &redis,
            "--redis-prefix",
            &prefix,
            "--login-per-minute",
            "30",
            "--admin-token",
            OPERATOR,
        ],
    )?;
    let addr = platform.addr.to_string();
    platform.wait_healthy().await?;
    platform.wait_ready().await?;
    let api = PlayerApi::new(addr.clone());

    // A name alone signs in no one, and bad input is refused with a reason.
    let (status, body) = post_status(&addr, "/v1/sessions", r#"{"name":"ann","zone":"meadow"}"#).await?;
    assert_eq!(status, 400);
    assert!(body.contains("a name alone no longer signs in"), "{body}");
    for (path, bad) in [
        ("/v1/sessions", "not json"),
        ("/v1/sessions", r#"{"username":"ann"}"#),
        ("/v1/sessions", r#"{"username":"ann","password":"x","device_secret":"y"}"#),
        ("/v1/accounts", r#"{"username":"a b","password":"long enough"}"#),
        ("/v1/accounts", r#"{"username":"x' OR 1=1; --","password":"long enough"}"#),
        ("/v1/accounts", r#"{"username":"guest","password":"long enough"}"#),
        ("/v1/accounts", r#"{"username":"ann","password":"short"}"#),
        ("/v1/accounts", r#"{"username":"ann","password":"long enough","character":"<img>"}"#),
        ("/v1/accounts", r#"{"username":"ann","password":"long enough","admin":true}"#),
        ("/v1/accounts/guest", r#"{"character":"a.b"}"#),
    ] {
        assert_eq!(post_status(&addr, path, bad).await?.0, 400, "{path} {bad}");
    }
    let huge = format!(r#"{{"username":"ann","password":"{}"}}"#, "p".repeat(20_000));
    assert_eq!(post_status(&addr, "/v1/accounts", &huge).await?.0, 413, "bodies over 16 KiB are refused unread");

    // Sign up; names are one account whatever their case.
    let sign_up = |username: &str, character: &str| SignUp {
        username: username.into(),
        password: "correct horse".into(),
        character: Some(character.into()),
    };
    let ann = api.sign_up(&sign_up("Ann", "ann")).await?;
    assert_eq!((ann.username.as_deref(), ann.character.as_str()), (Some("ann"), "ann"));
    assert!(ann.account_id > 0 && ann.account_id < 1 << 53, "a browser's number holds {}", ann.account_id);
    assert_eq!(refused(api.sign_up(&sign_up("ANN", "other")).await), 409, "the username is taken");
    assert_eq!(refused(api.sign_up(&sign_up("bea", "ANN")).await), 409, "the character name is taken");
    // A wrong password and an unknown user get the same answer.
    let wrong = refusal(api.sign_in(&SignIn::password("ann", "wrong horse")).await);
    let unknown = refusal(api.sign_in(&SignIn::password("nobody", "correct horse")).await);
    assert_eq!((wrong.as_str(), unknown.as_str()), ("wrong username or password", "wrong username or password"));
    let again = api.sign_in(&SignIn::password("ANN", "correct horse")).await?;
    assert_eq!(again.account_id, ann.account_id);
    let me = api.me(&again.session_token).await?;
    assert_eq!((me.id, me.guest), (ann.account_id, false));
    assert_eq!(refused(api.me("forged").await), 401);

    assert_eq!(refused(api.play(&ann.session_token, "meadow").await), 503, "no server yet");
    let (credential_a, credential_b) = (support::credential("zone-a"), support::credential("zone-b"));
    let (a, b) = (
        ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", addr.as_str(), "--server-token", &credential_a])?,
        ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", addr.as_str(), "--server-token", &credential_b])?,
    );
    wait_for(&addr, "both zone servers", |l| l.len() == 2).await?;

    let grant = api.play(&ann.session_token, "meadow").await?;
    assert!([a.ws_url(), b.ws_url()].contains(&grant.address), "{} is one of the servers", grant.address);
    assert_eq!(grant.player_id, ann.account_id, "the character's player id is the account's");
    let claims = respawn_token::TokenKey::new(TOKEN_KEY.as_bytes())?.verify(&grant.token, 0)?;
    assert_eq!((claims.player_id, claims.name.as_str()), (ann.account_id, "ann"));
    let mut ann_client = Client::connect(&grant.address).await?;
    ann_client.conn.join(grant.token.clone(), None, &grant.character_ticket, "meadow", Duration::from_secs(5)).await?;

    // A refresh token works once; its reuse ends the whole sign-in.
    let next = api.refresh(&again.refresh_token).await?;
    assert_eq!(next.account_id, ann.account_id);
    assert!(refusal(api.refresh(&again.refresh_token).await).contains("already used"));
    assert_eq!(refused(api.refresh(&next.refresh_token).await), 401, "the family is revoked");
    let session = api.sign_in(&SignIn::password("ann", "correct horse")).await?;
    api.logout(&session.refresh_token).await?;
    assert_eq!(refused(api.refresh(&session.refresh_token).await), 401, "logged out");

    // A guest signs in again with its device secret, then takes a username and password.
    let guest = api.guest(&GuestSignUp::default()).await?;
    let secret = guest.device_secret.clone().unwrap_or_default();
    assert!(guest.character.starts_with("guest-") && guest.username.is_none(), "{guest:?}");
    assert_eq!(api.sign_in(&SignIn::device(&secret)).await?.account_id, guest.account_id);
    assert_eq!(refused(api.sign_in(&SignIn::device("not-a-secret")).await), 401);
    let credentials = SetCredentials { username: "gus".into(), password: "guest no more".into() };
    api.set_credentials(&guest.session_token, &credentials).await?;
    assert_eq!(refused(api.set_credentials(&guest.session_token, &credentials).await), 409, "once only");
    assert_eq!(api.sign_in(&SignIn::password("gus", "guest no more")).await?.account_id, guest.account_id);
    assert_eq!(api.sign_in(&SignIn::device(&secret)).await?.account_id, guest.account_id, "the device still works");

    // A bot that knows only the platform server gets in by itself (as a guest).
    let bots = respawn_client::Fleet::spawn(
        respawn_client::Access::Login { platform: addr.clone() },
        &["caverns".to_owned()],
        1,
        "loginbot",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while bots.stats.connected.load(std::sync::atomic::Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "the bot never got in through the platform");
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
    for n in 0..4 {
        let newcomer = api.guest(&GuestSignUp::default()).await?;
        let grant = api.play(&newcomer.session_token, "meadow").await?;
        assert_eq!(grant.address, b.ws_url(), "newcomer {n} sent to the ready server");
    }

    // A ban (written where the operations API writes it) reaches the zone
    // servers with their next heartbeat: the player is kicked, refused at
    // join with a still valid token, and refused a join at the platform.
    let ops = respawn_store::redis_store::RedisOps::new(respawn_store::redis_store::RedisConn::new(&redis, &prefix)?);
    let ban = respawn_store::ops::Ban { player: ann.account_id, reason: "test".into(), by: "test".into(), at_ms: 1 };
    respawn_store::ops::OpsStore::ban(&ops, ban).await?;
    let kicked = ann_client.closed(Duration::from_secs(5)).await?;
    assert_eq!(kicked.code, respawn_proto::CloseCode::Kicked.code(), "{kicked:?}");
    let mut again_client = Client::connect(&grant.address).await?;
    again_client.conn.send(join_body(&grant.token)).await?;
    let refused_join = again_client.closed(Duration::from_secs(5)).await?;
    assert_eq!(refused_join.code, respawn_proto::CloseCode::Banned.code(), "{refused_join:?}");
    assert_eq!(refused(api.play(&ann.session_token, "meadow").await), 403);

    // An operator disables an account: no sign-in, refresh or join; enabled, it signs in again.
    let gus = api.sign_in(&SignIn::password("gus", "guest no more")).await?;
    let ops_call = |method: &'static str, path: String, body: &'static str| {
        let addr = addr.clone();
        async move { http::request_json(&addr, method, &path, Some(OPERATOR), body).await }
    };
    let (code, body) = ops_call("POST", "/v1/accounts/gus/disable".into(), r#"{"reason":"cheating"}"#).await?;
    assert_eq!(code, 200, "{body}");
    assert!(refusal(api.sign_in(&SignIn::password("gus", "guest no more")).await).contains("disabled: cheating"));
    assert_eq!(refused(api.refresh(&gus.refresh_token).await), 401, "its sign-ins were revoked");
    assert_eq!(refused(api.play(&gus.session_token, "meadow").await), 403);
    let (code, body) = ops_call("GET", format!("/v1/accounts/{}", guest.account_id), "").await?;
    assert!(code == 200 && body.contains("cheating"), "{code} {body}");
    assert_eq!(ops_call("POST", "/v1/accounts/gus/enable".into(), "").await?.0, 200);
    let (code, body) = ops_call("PUT", "/v1/accounts/gus/password".into(), r#"{"password":"reset by ops"}"#).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(refused(api.sign_in(&SignIn::password("gus", "guest no more")).await), 401, "the old password");
    assert_eq!(api.sign_in(&SignIn::password("gus", "reset by ops")).await?.account_id, guest.account_id);
    let audit = ops_call("GET", "/v1/audit".into(), "").await?.1;
    for action in ["disable account", "enable account", "reset password"] {
        assert!(audit.contains(action), "{action} audited: {audit}");
    }

    // Failed sign-ins are limited per account: then even the right password waits.
    bots.stop().await;
    let cara = api.sign_up(&sign_up("cara", "cara")).await?;
    for _ in 0..5 {
        assert_eq!(refused(api.sign_in(&SignIn::password("cara", "not her password")).await), 401);
    }
    let locked = api.sign_in(&SignIn::password("cara", "correct horse")).await;
    assert!(refusal(locked).contains("too many failed sign-in requests"));
    assert_eq!(
        api.sign_in(&SignIn::password("ann", "correct horse")).await?.account_id,
        ann.account_id,
        "others sign in"
    );
    assert!(cara.account_id != ann.account_id);

    // A sign-in flood from one address: refused with 429 and Retry-After, nothing issued.
    let issued_before = sign_ins_ok(&addr).await?;
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..40 {
        let answer =
            http::Call::new(http::Method::POST, &addr, "/v1/sessions").json(&SignIn::password("ann", "correct horse"));
        let answer = answer.send().await?;
        match answer.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let retry: u64 = answer.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
                assert!(retry >= 1, "Retry-After is a whole number of seconds: {:?}", answer.headers);
                assert!(answer.body.contains("too many sign-in requests"), "{}", answer.body);
            }
            other => bail!("flood sign-in answered {other}: {}", answer.body),
        }
    }
    // At most the burst (30) plus what refilled since the platform started (one per 2 s) got through.
    let most = 30.0 + platform_started.elapsed().as_secs_f64() / 2.0 + 1.0;
    assert!(limited >= 1 && f64::from(ok) <= most, "{limited} of 40 refused, {ok} allowed (at most {most:.0})");
    assert_eq!(sign_ins_ok(&addr).await? - issued_before, f64::from(ok), "429s issued nothing");
    Ok(())
}

fn join_body(token: &str) -> respawn_proto::client_message::Body {
    respawn_proto::client_message::Body::Join(respawn_proto::Join {
        protocol_version: respawn_proto::PROTOCOL_VERSION,
        token: token.to_owned(),
        zone: "meadow".into(),
        resume_token: String::new(),
        character_ticket: String::new(),
    })
}

/// `respawn ARGS` with `SSL_CERT_FILE` naming the trusted certificates: its
/// exit status and stdout, or its stderr when it failed.
fn respawn_trusting(trusted: &std::path::Path, args: &[&str]) -> Result<std::result::Result<String, String>> {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_respawn")).args(args).env("SSL_CERT_FILE", trusted).output()?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) })
}

/// Whatever a plain-HTTP request to `addr` gets back (nothing a TLS listener would answer).
async fn plain_http_answer(addr: std::net::SocketAddr) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn both_servers_serve_tls_and_ctl_bots_and_the_platform_reach_them_through_it() -> Result<()> {
    let dir = support::TempDir::new("tls")?;
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.key_pair.serialize_pem())?;
    let (cert_arg, key_arg) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let tls = ["--tls-cert", cert_arg.as_str(), "--tls-key", key_arg.as_str()];
    let trusted = [("SSL_CERT_FILE", cert_arg.as_str())];

    let db = Database::create("tls").await?;
    let mut args = vec!["--server-key", support::SERVER_KEY, "--token-key", TOKEN_KEY, "--admin-token", OPERATOR];
    args.extend(tls);
    let platform = Platform::start_with_env("127.0.0.1:1", &db.url(), "tls", &args, &trusted)?;
    let endpoint = format!("https://127.0.0.1:{}", platform.addr.port());
    let credential = support::credential("tls-zone");
    let mut args = vec!["--platform", endpoint.as_str(), "--server-token", credential.as_str()];
    args.extend(tls);
    let zone = ZoneProcess::start_with_env(TEST_CONFIG, &args, &trusted)?;

    // Plain HTTP gets no answer from either: only TLS is served.
    for addr in [platform.addr, zone.addr] {
        let answer = plain_http_answer(addr).await?;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{addr} answered plain HTTP: {answer}");
    }

    // The zone heartbeats over https; the platform scrapes its metrics over
    // https (reachable); ctl reads it all over https.
    let servers = ["ctl", "--endpoint", endpoint.as_str(), "--token", OPERATOR, "--json", "servers"];
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = respawn_trusting(&cert, &servers)?;
        if let Ok(json) = &listed {
            let list: Vec<Value> = serde_json::from_str(json)?;
            if list.len() == 1 && list[0]["reachable"] == true {
                break list;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the zone server is not listed as reachable: {listed:?}\nplatform:\n{}\nzone:\n{}",
                platform.log(),
                zone.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed[0]["address"], format!("wss://127.0.0.1:{}/ws", zone.addr.port()));

    // A client that does not trust the certificate is refused.
    let untrusted = respawn_trusting(&dir.path().join("none.pem"), &servers)?;
    let refusal = untrusted.expect_err("ctl trusted a certificate it had no root for");
    assert!(refusal.contains("certificate"), "{refusal}");

    // Bots sign in over https and play over wss.
    let zone_endpoint = format!("https://127.0.0.1:{}", zone.addr.port());
    let load = [
        "loadgen",
        "--platform",
        endpoint.as_str(),
        "--addr",
        zone_endpoint.as_str(),
        "--clients",
        "2",
        "--ramp-secs",
        "1",
        "--hold-secs",
        "2",
        "--json",
    ];
    let report: Value = match respawn_trusting(&cert, &load)? {
        Ok(json) => serde_json::from_str(&json)?,
        Err(e) => bail!("loadgen over TLS failed: {e}\nplatform:\n{}", platform.log()),
    };
    assert_eq!(report["connected"], 2, "{report}");
    assert!(report["updates_per_client_per_s_min"].as_f64().unwrap_or(0.0) > 0.0, "{report}");

    // The platform's admin call reaches the zone server over https: it drains and stops.
    let drain = ["ctl", "--endpoint", endpoint.as_str(), "--token", OPERATOR, "drain", "tls-zone"];
    if let Err(e) = respawn_trusting(&cert, &drain)? {
        bail!("drain over TLS failed: {e}\nplatform:\n{}", platform.log());
    }
    let (status, log) = zone.wait_exit(Duration::from_secs(20))?;
    assert!(status.success() && log.contains("stopped cleanly"), "{status}: {log}");
    Ok(())
}
