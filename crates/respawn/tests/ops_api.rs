//! The operations API against real processes: a platform server keeping its
//! operations state and rate limits in the real Redis of `scripts/services`,
//! a zone server heartbeating into it, and no MySQL at all (port 1), which
//! is also the resilience case: reads that need MySQL answer 503, the others
//! keep working. Every refused call is checked to change nothing.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::http;
use respawn_api::overview::{EventPath, Status, Trends};
use respawn_api::players::{PlayerApi, SignIn, SignUp};
use respawn_proto::{server_message::Body as S, CloseCode, NoticeKind};
use respawn_store::ops::OpsStore as _;
use serde_json::{json, Value};
use support::{Client, Platform, ZoneProcess, TEST_CONFIG, TOKEN_KEY};

const BOOTSTRAP: &str = "ops-test-bootstrap-admin-secret";

struct Api {
    addr: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Result<(u16, Value)> {
        let body = body.map(|b| b.to_string());
        let answer = http::exchange(&self.addr, method, path, token, body.as_deref()).await?;
        let value = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body.trim().to_owned()));
        Ok((answer.status, value))
    }

    async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, Some(token), body).await?;
        if status != 200 {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    async fn token(&self, name: &str, role: &str, extra: Value) -> Result<String> {
        let mut body = json!({ "name": name, "role": role });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let created = self.ok("POST", "/v1/tokens", BOOTSTRAP, Some(body)).await?;
        Ok(created["token"].as_str().context("a secret")?.to_owned())
    }

    /// How many records the audit log of actions (or, `refused`, of refusals) holds.
    async fn audit_len(&self, refused: bool) -> Result<usize> {
        let path = format!("/v1/audit?limit=500&refused={refused}");
        Ok(self.ok("GET", &path, BOOTSTRAP, None).await?.as_array().map_or(0, Vec::len))
    }

    async fn bans_version(&self) -> Result<u64> {
        Ok(self.ok("GET", "/v1/bans", BOOTSTRAP, None).await?["version"].as_u64().unwrap_or(0))
    }
}

/// The two tests of this file run one after the other: the second's
/// platform server may have a whole suite's events to catch up on, and
/// timing the first's calls against that load would measure the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `check` for up to 10 s.
async fn wait_until<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    respawn_harness::wait_until(what, Duration::from_secs(10), check).await
}

#[tokio::test]
async fn operators_act_by_role_every_action_is_audited_and_bad_calls_change_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let redis = std::env::var("RESPAWN_TEST_REDIS_URL").context("run through scripts/test")?;
    let prefix = format!("ops-{}", respawn_harness::unique_suffix());
    let args = [
        "--server-key",
        support::SERVER_KEY,
        "--admin-token",
        BOOTSTRAP,
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix,
        "--api-per-second",
        "8",
    ];
    let platform = Platform::start_with("127.0.0.1:1", "mysql://root@127.0.0.1:1/none", "ops-test", &args)?;
    platform.wait_healthy().await?;
    let api = Api { addr: platform.addr.to_string() };
    let credential = support::credential("ops-zone");
    let zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", &api.addr, "--server-token", &credential])?;

    // Every documented operator route exists with its method and refuses
    // callers without a token or with a forged one.
    let (status, doc) = api.call("GET", "/openapi.json", None, None).await?;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, methods) in doc["paths"].as_object().context("paths")? {
        for (method, operation) in methods.as_object().context("methods")? {
            if operation["x-role"].is_null() {
                continue;
            }
            let concrete = path.replace("{player}", "ann").replace("{id}", "s1").replace("{name}", "t1");
            for token in [None, Some("forged-token-0123456789")] {
                let (status, _) = api.call(&method.to_uppercase(), &concrete, token, None).await?;
                assert_eq!(status, 401, "{method} {path} with {token:?}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} operator routes checked");

    let viewer = api.token("vera", "viewer", json!({})).await?;
    let operator = api.token("otto", "operator", json!({})).await?;
    let short_lived = api.token("brief", "viewer", json!({ "expires_in_secs": 1 })).await?;
    let listed = api.ok("GET", "/v1/tokens", BOOTSTRAP, None).await?.to_string();
    for secret in [&viewer, &operator, &short_lived] {
        assert!(!listed.contains(secret.as_str()), "secrets are never listed");
    }

    // Zones and servers, live, for a viewer.
    let (mut ann, _) = Client::join(&zone.ws_url(), 101, "ann", "meadow").await?;
    let (bob, _) = Client::join(&zone.ws_url(), 102, "bob", "caverns").await?;
    wait_until("the viewer sees ann in meadow", || async {
        let zones = api.ok("GET", "/v1/zones", &viewer, None).await?;
        Ok(zones
            .as_array()
            .is_some_and(|z| z.iter().any(|z| z["name"] == "meadow" && z["players"] == 1 && z["status"] == "running")))
    })
    .await?;
    let zones = api.ok("GET", "/v1/zones", &viewer, None).await?;
    let meadow = zones.as_array().and_then(|z| z.iter().find(|z| z["name"] == "meadow")).context("meadow")?;
    assert!(meadow["tick_p99_ms"].as_f64().is_some(), "{meadow}");
    assert_eq!(meadow["address"], zone.ws_url().as_str());
    let servers = api.ok("GET", "/v1/servers", &viewer, None).await?;
    let server_id = servers[0]["id"].as_str().context("a server id")?.to_owned();
    let status = api.ok("GET", "/v1/status", &viewer, None).await?;
    assert_eq!(status["ledger"], "unavailable");

    // Without MySQL, profiles and event search say so; the rest works.
    for path in ["/v1/players/101", "/v1/events?player=101"] {
        let (status, body) = api.call("GET", path, Some(&viewer), None).await?;
        assert_eq!(status, 503, "{path}");
        assert!(body.as_str().is_some_and(|b| b.contains("MySQL unavailable")), "{body}");
    }
    // Names are looked up in the accounts, which live in MySQL too.
    for path in ["/v1/players/ann", "/v1/events?player=ann", "/v1/accounts/ann"] {
        let (status, body) = api.call("GET", path, Some(&viewer), None).await?;
        assert_eq!(status, 503, "{path}");
        assert!(body.as_str().is_some_and(|b| b.contains("accounts unavailable")), "{body}");
    }

    // Roles: each refusal changes nothing and is itself audited, apart
    // from the actions (so refusals cannot push actions out of their list).
    let (bans_before, audit_before) = (api.bans_version().await?, api.audit_len(false).await?);
    let refusals_before = api.audit_len(true).await?;
    let refused = [
        ("POST", "/v1/players/ann/kick".to_owned(), &viewer, json!({})),
        ("POST", "/v1/announcements".to_owned(), &viewer, json!({ "text": "hi" })),
        ("POST", format!("/v1/servers/{server_id}/drain"), &viewer, json!({})),
        ("PUT", "/v1/players/ann/ban".to_owned(), &operator, json!({ "reason": "x" })),
        ("POST", "/v1/tokens".to_owned(), &operator, json!({ "name": "sneaky", "role": "admin" })),
    ];
    for (method, path, token, body) in &refused {
        let (status, answer) = api.call(method, path, Some(token), Some(body.clone())).await?;
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    assert_eq!(api.ok("GET", "/v1/tokens", BOOTSTRAP, None).await?.as_array().map(Vec::len), Some(4));
    assert_eq!(api.bans_version().await?, bans_before);
    assert_eq!(api.audit_len(true).await?, refusals_before + refused.len(), "refusals audited");
    assert_eq!(api.audit_len(false).await?, audit_before, "refusals kept apart from the actions");
    let newest = api.ok("GET", "/v1/audit?limit=1&refused=true", &viewer, None).await?;
    assert!(newest[0]["result"].as_str().is_some_and(|r| r.starts_with("refused: role operator")), "{newest}");
    let ready = api.ok("GET", "/v1/servers", &viewer, None).await?;
    assert_eq!(ready[0]["state"], "ready", "the refused drain did not drain");

    // Bad input: SQL-shaped, oversized, malformed. All 400 or 413, nothing changed.
    let bad: [(&str, &str, Option<Value>, u16); 8] = [
        ("GET", "/v1/players/x'%20OR%20'1'='1", None, 400),
        ("GET", "/v1/events?kind=x'%20OR%201=1", None, 400),
        ("GET", "/v1/events?limit=lots", None, 400),
        ("GET", "/v1/events?cursor=1.2.3", None, 400),
        ("PUT", "/v1/players/ann;DROP%20TABLE%20players/ban", Some(json!({ "reason": "x" })), 400),
        ("PUT", "/v1/players/ann/ban", Some(json!({ "reason": "r".repeat(600) })), 400),
        ("PUT", "/v1/players/ann/ban", Some(json!({ "reason": "x", "until": "forever" })), 400),
        ("POST", "/v1/announcements", Some(json!({ "text": "t".repeat(20_000) })), 413),
    ];
    for (method, path, body, want) in bad {
        let (status, answer) = api.call(method, path, Some(BOOTSTRAP), body).await?;
        assert_eq!(status, want, "{method} {path}: {answer}");
    }
    assert_eq!(api.bans_version().await?, bans_before, "no bad call banned anyone");

    // Operators announce (a player sees it) and kick (the player is closed).
    let sent =
        api.ok("POST", "/v1/announcements", &operator, Some(json!({ "text": "Maintenance at 10:00 & soon" }))).await?;
    assert_eq!(sent["servers_reached"], 1);
    let notice = ann
        .next_matching(Duration::from_secs(5), |b| match b {
            S::Notice(n) if n.kind == NoticeKind::Announcement as i32 => Some(n.text.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(notice, "Maintenance at 10:00 & soon");
    api.ok("POST", "/v1/players/101/kick", &operator, Some(json!({ "reason": "afk" }))).await?;
    assert_eq!(ann.closed(Duration::from_secs(5)).await?.code, CloseCode::Kicked.code());

    // Admins ban (the player is kicked and kept out) and unban.
    // (By id: without MySQL there are no accounts to find a name in; see below.)
    let player = 102;
    let mut bob_again = bob;
    api.ok("PUT", "/v1/players/102/ban", BOOTSTRAP, Some(json!({ "reason": "botting" }))).await?;
    assert_eq!(bob_again.closed(Duration::from_secs(5)).await?.code, CloseCode::Kicked.code());
    let bans = api.ok("GET", "/v1/bans", &viewer, None).await?;
    assert_eq!(bans["bans"][0]["player_id"], player);
    assert_eq!(bans["bans"][0]["by"], "bootstrap-admin");
    api.ok("DELETE", "/v1/players/102/ban", BOOTSTRAP, None).await?;
    assert_eq!(api.call("DELETE", "/v1/players/102/ban", Some(BOOTSTRAP), None).await?.0, 404);

    // The audit log, newest first: who, what, when, result.
    let audit = api.ok("GET", "/v1/audit?limit=5", &viewer, None).await?;
    let actions: Vec<&str> = audit.as_array().context("audit")?.iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions[..4], ["unban", "unban", "ban", "kick"], "{audit}");
    assert_eq!(audit[0]["result"], "failed: 404 Not Found");
    assert_eq!(audit[3]["actor"], "otto");
    assert!(audit[0]["at_ms"].as_u64().unwrap_or(0) > 1_700_000_000_000);
    let (status, _) = api.call("PUT", "/v1/players/bob/ban", Some(BOOTSTRAP), Some(json!({ "reason": "x" }))).await?;
    assert_eq!(status, 503, "a name is looked up in the accounts, which live in MySQL");

    // Expired and revoked tokens stop working.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (status, body) = api.call("GET", "/v1/status", Some(&short_lived), None).await?;
    assert_eq!(status, 401);
    assert!(body.as_str().is_some_and(|b| b.contains("expired")), "{body}");
    api.ok("DELETE", "/v1/tokens/otto", BOOTSTRAP, None).await?;
    assert_eq!(api.call("GET", "/v1/status", Some(&operator), None).await?.0, 401);

    // A flood from one token: 429 with Retry-After once its burst is spent.
    let flooder = api.token("flood", "viewer", json!({})).await?;
    let mut limited = 0;
    let flood_started = Instant::now();
    for _ in 0..150 {
        let answer = http::exchange(&api.addr, "GET", "/v1/zones", Some(&flooder), None).await?;
        if answer.status == 429 {
            limited += 1;
            assert!(answer.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1));
        }
    }
    // At most the burst (80) plus what refilled meanwhile (8 a second) got through.
    let most = 80.0 + 8.0 * flood_started.elapsed().as_secs_f64() + 1.0;
    assert!(limited >= 1 && f64::from(150 - limited) <= most, "{limited} of 150 limited (at most {most:.0} allowed)");
    assert_eq!(api.ok("GET", "/v1/zones", &viewer, None).await?.as_array().map(Vec::len), Some(2), "others unaffected");

    // Drain through the API (a player keeps it draining): the registry shows it.
    let (_holder, _) = Client::join(&zone.ws_url(), 103, "holder", "meadow").await?;
    api.ok("POST", &format!("/v1/servers/{server_id}/drain"), BOOTSTRAP, None).await?;
    wait_until("the server draining", || async {
        Ok(api.ok("GET", "/v1/servers", &viewer, None).await?[0]["state"] == "draining")
    })
    .await?;

    // The start-up admin token is installed only where no token exists: once
    // revoked it is gone, even after a restart with the same --admin-token.
    let ada = api.token("ada", "admin", json!({})).await?;
    api.ok("DELETE", "/v1/tokens/bootstrap-admin", &ada, None).await?;
    assert_eq!(api.call("GET", "/v1/tokens", Some(BOOTSTRAP), None).await?.0, 401, "revoked");
    drop(platform);
    let platform = Platform::start_with("127.0.0.1:1", "mysql://root@127.0.0.1:1/none", "ops-test", &args)?;
    platform.wait_healthy().await?;
    let api = Api { addr: platform.addr.to_string() };
    assert_eq!(api.call("GET", "/v1/tokens", Some(BOOTSTRAP), None).await?.0, 401, "not installed again");
    let listed = api.ok("GET", "/v1/tokens", &ada, None).await?;
    assert!(!listed.to_string().contains("bootstrap-admin"), "{listed}");
    // The last admin token stays: without it nobody could make another.
    let (status, answer) = api.call("DELETE", "/v1/tokens/ada", Some(&ada), None).await?;
    assert_eq!(status, 409, "{answer}");
    // A store that lost every token (a wiped Redis) takes the start-up token again.
    let stored =
        respawn_store::redis_store::RedisOps::new(respawn_store::redis_store::RedisConn::new(&redis, &prefix)?);
    for token in stored.operators().await? {
        stored.revoke_operator(&token.name).await?;
    }
    drop(platform);
    let platform = Platform::start_with("127.0.0.1:1", "mysql://root@127.0.0.1:1/none", "ops-test", &args)?;
    platform.wait_healthy().await?;
    let api = Api { addr: platform.addr.to_string() };
    let listed = api.ok("GET", "/v1/tokens", BOOTSTRAP, None).await?;
    assert!(listed.to_string().contains("bootstrap-admin"), "installed in an empty store: {listed}");
    Ok(())
}

/// `respawn ctl` with its endpoint and token; returns (success, stdout, stderr).
fn ctl(endpoint: &str, token: Option<&str>, args: &[&str]) -> Result<(bool, String, String)> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_respawn"));
    cmd.arg("ctl").args(args).env("RESPAWN_PLATFORM_URL", endpoint).env_remove("RESPAWN_OPERATOR_TOKEN");
    if let Some(token) = token {
        cmd.env("RESPAWN_OPERATOR_TOKEN", token);
    }
    let out = cmd.output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn ctl_ok(endpoint: &str, args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = ctl(endpoint, Some(BOOTSTRAP), args)?;
    if !ok {
        bail!("respawn ctl {args:?} failed: {stderr}");
    }
    Ok(stdout)
}

#[tokio::test]
async fn ctl_runs_a_real_deployment_with_kafka_and_mysql() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").context("run through scripts/test")?;
    let db = support::Database::create("ctl").await?;
    let platform = Platform::start_with(
        &brokers,
        &db.url(),
        &format!("platform-ctl-{}", std::process::id()),
        &["--server-key", support::SERVER_KEY, "--admin-token", BOOTSTRAP, "--token-key", TOKEN_KEY],
    )?;
    platform.wait_healthy().await?;
    let endpoint = format!("http://{}", platform.addr);
    platform.wait_ready().await?;
    let zone = ZoneProcess::start_with_args(
        TEST_CONFIG,
        &[
            "--kafka-brokers",
            &brokers,
            "--platform",
            &platform.addr.to_string(),
            "--server-token",
            &support::credential("ctl-zone"),
        ],
    )?;
    // A name of this run: the topic holds every earlier run's events too.
    let name = format!("carol{}", std::process::id());
    let name = name.as_str();
    let signed_up = PlayerApi::new(platform.addr.to_string())
        .sign_up(&SignUp { username: name.into(), password: "carol's password".into(), character: None })
        .await?;
    let carol = signed_up.account_id;
    let (mut client, _) = Client::join(&zone.ws_url(), carol, name, "meadow").await?;

    // Refused without a token or with a wrong one, with a reason.
    let (ok, _, stderr) = ctl(&endpoint, None, &["zones"])?;
    assert!(!ok && stderr.contains("no operator token"), "{stderr}");
    let (ok, _, stderr) = ctl(&endpoint, Some("wrong-token-0123456789"), &["zones"])?;
    assert!(!ok && stderr.contains("401"), "{stderr}");

    wait_until("ctl zones shows carol in meadow", || async {
        let json: Value = serde_json::from_str(&ctl_ok(&endpoint, &["zones", "--json"])?)?;
        Ok(json.as_array().is_some_and(|z| z.iter().any(|z| z["name"] == "meadow" && z["players"] == 1)))
    })
    .await?;
    let table = ctl_ok(&endpoint, &["zones"])?;
    assert!(table.starts_with("ZONE") && table.contains("meadow") && table.contains("running"), "{table}");
    let status: Status = serde_json::from_str(&ctl_ok(&endpoint, &["status", "--json"])?)?;
    assert_eq!((status.ledger.as_str(), status.db_pool.max), ("mysql", 8));
    assert_eq!(status.events.path, EventPath::Kafka);
    assert!(status.events.consumer_lag.is_some() && status.events.consumed_per_second.is_some(), "{status:?}");
    let table = ctl_ok(&endpoint, &["status"])?;
    assert!(table.contains("Kafka → mysql") && table.contains("consumer lag"), "{table}");

    // The profile and the events come from MySQL once the pipeline stored them.
    // A new consumer group reads the topic from the start: everything the suite published before.
    respawn_harness::wait_until("carol's record in MySQL", Duration::from_secs(120), || async {
        let json: Value = serde_json::from_str(&ctl_ok(&endpoint, &["player", "show", name, "--json"])?)?;
        Ok(json["record"]["name"] == name && json["record"]["online"] == true)
    })
    .await?;
    // The dashboard's charts: the consumer's stored events, per second, over some 5 s interval.
    respawn_harness::wait_until("events stored per second in the trends", Duration::from_secs(30), || async {
        let answer = http::exchange(&platform.addr.to_string(), "GET", "/v1/trends", Some(BOOTSTRAP), None).await?;
        let trends: Trends = serde_json::from_str(&answer.body)?;
        assert_eq!((trends.path, trends.period_secs), (EventPath::Kafka, 5));
        Ok(trends.events_stored_per_second.iter().flatten().any(|rate| *rate > 0.0)
            && trends.zones.iter().any(|z| z.name == "meadow" && z.ccu.last() == Some(&Some(1))))
    })
    .await?;
    let profile = ctl_ok(&endpoint, &["player", "show", name])?;
    assert!(profile.contains("level") && profile.contains("banned") && profile.contains("no"), "{profile}");
    let events = ctl_ok(&endpoint, &["events", "--player", name, "--kind", "player_joined"])?;
    assert_eq!(events.lines().filter(|l| l.contains("player_joined")).count(), 1, "{events}");
    let page: Value = serde_json::from_str(&ctl_ok(
        &endpoint,
        &["events", "--since", "2020-01-01T00:00:00Z", "--limit", "1", "--json"],
    )?)?;
    let cursor = page["next_cursor"].as_str().context("a next page")?;
    let next: Value =
        serde_json::from_str(&ctl_ok(&endpoint, &["events", "--limit", "1", "--cursor", cursor, "--json"])?)?;
    assert_ne!(next["events"][0]["id"], page["events"][0]["id"], "the next page moves on");

    // Announce, kick, ban; the audit log has each.
    ctl_ok(&endpoint, &["announce", "Double XP weekend", "--zone", "meadow"])?;
    let text = client
        .next_matching(Duration::from_secs(5), |b| match b {
            S::Notice(n) if n.kind == NoticeKind::Announcement as i32 => Some(n.text.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(text, "Double XP weekend");
    ctl_ok(&endpoint, &["kick", name, "--reason", "test"])?;
    assert_eq!(client.closed(Duration::from_secs(5)).await?.code, CloseCode::Kicked.code());
    ctl_ok(&endpoint, &["ban", name, "--reason", "testing bans"])?;
    let bans = ctl_ok(&endpoint, &["bans"])?;
    assert!(bans.contains(&carol.to_string()) && bans.contains("testing bans"), "{bans}");
    let audit = ctl_ok(&endpoint, &["audit"])?;
    let archived = ctl_ok(&endpoint, &["audit", "--archived", "--limit", "100"])?;
    assert!(archived.contains("announce") && archived.contains("kick"), "the ledger's trail: {archived}");
    for action in ["announce", "kick", "ban"] {
        assert!(audit.lines().any(|l| l.contains(action) && l.contains("bootstrap-admin")), "{action}: {audit}");
    }
    let (ok, _, stderr) = ctl(&endpoint, Some(BOOTSTRAP), &["ban", name])?;
    assert!(!ok && stderr.contains("--reason"), "clap asks for the reason: {stderr}");

    // Accounts: show, disable (sign-in refused), enable, a password reset read from standard input.
    let players = PlayerApi::new(platform.addr.to_string());
    let shown: Value = serde_json::from_str(&ctl_ok(&endpoint, &["account", "show", name, "--json"])?)?;
    assert_eq!((shown["id"].as_u64(), shown["guest"].as_bool()), (Some(carol), Some(false)), "{shown}");
    ctl_ok(&endpoint, &["account", "disable", name, "--reason", "chargeback"])?;
    let refused = players.sign_in(&SignIn::password(name, "carol's password")).await;
    assert_eq!(refused.err().and_then(|e| e.status()), Some(403));
    ctl_ok(&endpoint, &["account", "enable", name])?;
    let mut reset = std::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["ctl", "account", "reset-password", name])
        .env("RESPAWN_PLATFORM_URL", &endpoint)
        .env("RESPAWN_OPERATOR_TOKEN", BOOTSTRAP)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut reset.stdin.take().context("stdin")?, b"a new password\n")?;
    assert!(reset.wait_with_output()?.status.success());
    assert_eq!(players.sign_in(&SignIn::password(name, "a new password")).await?.account_id, carol);
    let audit = ctl_ok(&endpoint, &["audit"])?;
    let archived = ctl_ok(&endpoint, &["audit", "--archived", "--limit", "100"])?;
    assert!(archived.contains("announce") && archived.contains("kick"), "the ledger's trail: {archived}");
    for action in ["disable account", "enable account", "reset password"] {
        assert!(audit.contains(action), "{action}: {audit}");
    }

    // Tokens and drain.
    let created = ctl_ok(&endpoint, &["token", "create", "ci-viewer", "--role", "viewer"])?;
    let secret = created.lines().find_map(|l| l.strip_prefix("token: ")).context("the secret")?.to_owned();
    let (ok, _, stderr) = ctl(&endpoint, Some(&secret), &["kick", name])?;
    assert!(!ok && stderr.contains("403"), "a viewer cannot kick: {stderr}");
    let servers: Value = serde_json::from_str(&ctl_ok(&endpoint, &["servers", "--json"])?)?;
    let id = servers[0]["id"].as_str().context("server id")?.to_owned();
    let (_holder, _) = Client::join(&zone.ws_url(), 5, "holder", "meadow").await?;
    ctl_ok(&endpoint, &["drain", &id])?;
    wait_until("the server draining", || async {
        Ok(ctl_ok(&endpoint, &["servers"])?.lines().any(|l| l.contains(&id) && l.contains("draining")))
    })
    .await?;
    Ok(())
}
