//! Integration tests of `respawn zone`: a real process, real WebSocket clients.

mod support;

use std::time::Duration;

use anyhow::Result;
use respawn_proto::{client_message::Body as C, server_message::Body as S, CloseCode, NoticeKind};
use support::{metric, scrape, token, token_expiring, Client, ZoneProcess};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

fn join_fields(token: String, zone: &str) -> respawn_proto::Join {
    respawn_proto::Join {
        protocol_version: respawn_proto::PROTOCOL_VERSION,
        token,
        zone: zone.into(),
        ..Default::default()
    }
}

fn join_msg(token: String, zone: &str) -> C {
    C::Join(join_fields(token, zone))
}

#[tokio::test]
async fn players_join_move_see_each_other_and_metrics_move() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let url = zone.ws_url();
    let (mut ann, ann_welcome) = Client::join(&url, 1, "ann", "meadow").await?;
    let (mut bob, bob_welcome) = Client::join(&url, 2, "bob", "meadow").await?;
    assert_eq!(ann_welcome.zone, "meadow");
    assert_eq!(ann_welcome.protocol_version, respawn_proto::PROTOCOL_VERSION);
    assert_ne!(ann_welcome.entity_id, bob_welcome.entity_id);

    // Bob is told about Ann, by name.
    let ann_id = ann_welcome.entity_id;
    let ann_start = bob
        .next_matching(T, |b| match b {
            S::Update(u) => u.entered.iter().find(|e| e.id == ann_id).map(|e| (e.name.clone(), e.x)),
            _ => None,
        })
        .await?;
    assert_eq!(ann_start.0, "ann");

    // A client of the previous protocol (1) still plays.
    let mut dan = Client::connect(&url).await?;
    dan.send(C::Join(respawn_proto::Join { protocol_version: 1, ..join_fields(token(4, "dan"), "meadow") })).await?;
    let dan_welcome = dan.next_matching(T, |b| if let S::Welcome(w) = b { Some(w.clone()) } else { None }).await?;
    assert_eq!(dan_welcome.protocol_version, 1, "the server speaks the client's version");
    dan.next_matching(T, |b| matches!(b, S::Update(u) if u.entered.iter().any(|e| e.id == ann_id)).then_some(()))
        .await?;

    // Ann moves; Bob sees her steps (protocol 2), Dan her new position (protocol 1).
    let vx = if ann_start.1 > 1_500 { -20 } else { 20 };
    ann.send(C::Move(respawn_proto::MoveInput { seq: 1, vx, vy: 0 })).await?;
    let step = bob
        .next_matching(T, |b| match b {
            S::Update(u) => u.moves().ok()?.into_iter().find(|m| m.id == ann_id && m.dx != 0).map(|m| m.dx),
            _ => None,
        })
        .await?;
    assert_eq!(step.signum(), vx.signum());
    let moved_to = dan
        .next_matching(T, |b| match b {
            S::Update(u) if u.moved_ids.is_empty() => {
                u.changed.iter().find(|e| e.id == ann_id && e.x != ann_start.1).map(|e| e.x)
            }
            S::Update(_) => Some(i32::MIN),
            _ => None,
        })
        .await?;
    assert_eq!((moved_to - ann_start.1).signum(), vx.signum(), "protocol 1 gets no packed moves");
    dan.send(C::Leave(respawn_proto::Leave {})).await?;
    assert_eq!(dan.closed(T).await?.code, CloseCode::Normal.code());

    // A player in the other zone sees neither of them.
    let (mut cat, _) = Client::join(&url, 3, "cat", "caverns").await?;
    for _ in 0..5 {
        if let S::Update(u) = cat.next(T).await? {
            assert!(u.entered.iter().all(|e| e.name != "ann" && e.name != "bob"));
        }
    }

    // Ping is answered; a move faster than the limit is rejected with its reason.
    ann.send(C::Ping(respawn_proto::Ping { client_time: 4242 })).await?;
    let pong = ann.next_matching(T, |b| if let S::Pong(p) = b { Some(p.clone()) } else { None }).await?;
    assert_eq!(pong.client_time, 4242);
    assert!(pong.server_tick > 0);
    ann.send(C::Move(respawn_proto::MoveInput { seq: 77, vx: 500, vy: 0 })).await?;
    let rejected = ann.next_matching(T, |b| if let S::Rejected(r) = b { Some(r.clone()) } else { None }).await?;
    assert_eq!((rejected.seq, rejected.reason.as_str()), (77, "too_fast"));

    // Metrics show the activity (RTT pings go out every 100 ms in the test config).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = scrape(zone.addr).await?;
    assert_eq!(metric(&m, r#"respawn_zone_players{zone="meadow"}"#), Some(2.0), "ann and bob (dan left)");
    assert_eq!(metric(&m, r#"respawn_zone_players{zone="caverns"}"#), Some(1.0));
    assert!(metric(&m, r#"respawn_zone_tick_duration_seconds_count{zone="meadow"}"#).unwrap_or(0.0) > 10.0);
    // Every tick's start is measured against its schedule.
    assert!(metric(&m, r#"respawn_zone_tick_lateness_seconds_count{zone="meadow"}"#).unwrap_or(0.0) > 10.0);
    // Ann sent two moves and a ping after joining.
    assert!(metric(&m, r#"respawn_zone_packets_received_total{zone="meadow"}"#).unwrap_or(0.0) >= 3.0);
    assert!(metric(&m, r#"respawn_zone_received_bytes_total{zone="meadow"}"#).unwrap_or(0.0) > 0.0);
    assert!(metric(&m, r#"respawn_zone_packets_sent_total{zone="meadow"}"#).unwrap_or(0.0) > 10.0);
    assert!(metric(&m, r#"respawn_zone_sent_bytes_total{zone="meadow"}"#).unwrap_or(0.0) > 100.0);
    assert!(metric(&m, r#"respawn_zone_rtt_seconds_count{zone="meadow"}"#).unwrap_or(0.0) >= 1.0);
    assert_eq!(metric(&m, r#"respawn_zone_commands_rejected_total{reason="too_fast",zone="meadow"}"#), Some(1.0));
    assert!(metric(&m, r#"respawn_zone_command_queue_length{zone="meadow"}"#).is_some());
    assert!(metric(&m, "process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(metric(&m, "process_cpu_seconds_total").is_some());
    assert_eq!(metric(&m, r#"respawn_zone_events_total{type="player_joined",zone="meadow"}"#), Some(3.0));
    // Every event is either waiting in the durable outbox or already in the embedded ledger.
    let pending = metric(&m, r#"respawn_zone_outbox_pending_events{zone="meadow"}"#).unwrap_or(0.0);
    let published = metric(&m, r#"respawn_zone_events_published_total{zone="meadow"}"#).unwrap_or(0.0);
    assert!(pending + published >= 3.0, "pending {pending}, published {published}");
    assert!(metric(&m, r#"respawn_zone_outbox_bytes{zone="meadow"}"#).is_some());
    assert_eq!(metric(&m, r#"respawn_zone_outbox_dropped_events{zone="meadow"}"#), Some(0.0));

    // Leaving is reflected in CCU.
    bob.send(C::Leave(respawn_proto::Leave {})).await?;
    assert_eq!(bob.closed(T).await?.code, CloseCode::Normal.code());
    support::wait_metric(zone.addr, r#"respawn_zone_players{zone="meadow"}"#, 1.0).await?;
    Ok(())
}

/// One bad-input case: frames sent on a fresh connection, and the close code expected.
struct Case {
    name: &'static str,
    join_first: bool,
    frames: Vec<Message>,
    expect: CloseCode,
}

fn bin(body: C) -> Message {
    Message::Binary(respawn_proto::encode_client(body))
}

fn cases() -> Vec<Case> {
    let forged = {
        let key = respawn_token::TokenKey::new(b"some-other-secret-key").expect("key");
        let claims = respawn_token::Claims { player_id: 9, name: "mallory".into(), expires_at: u64::MAX / 2 };
        key.sign(&claims).expect("sign")
    };
    let version = |v| {
        C::Join(respawn_proto::Join {
            protocol_version: v,
            token: token(9, "eve"),
            zone: "meadow".into(),
            ..Default::default()
        })
    };
    let flood: Vec<Message> =
        (0..400).map(|i| bin(C::Move(respawn_proto::MoveInput { seq: i, vx: 1, vy: 1 }))).collect();
    vec![
        Case {
            name: "malformed frame",
            join_first: false,
            frames: vec![Message::Binary(vec![0xff, 0xff, 0xff].into())],
            expect: CloseCode::InvalidPayload,
        },
        Case {
            name: "unknown message type",
            join_first: false,
            frames: vec![Message::Binary(vec![0x78, 0x01].into())],
            expect: CloseCode::UnknownMessage,
        },
        Case {
            name: "oversized frame",
            join_first: false,
            frames: vec![Message::Binary(vec![0u8; 5_000].into())],
            expect: CloseCode::TooBig,
        },
        Case {
            name: "text frame",
            join_first: false,
            frames: vec![Message::Text("hello".into())],
            expect: CloseCode::UnsupportedData,
        },
        Case {
            name: "wrong protocol version",
            join_first: false,
            frames: vec![bin(version(99))],
            expect: CloseCode::UnsupportedProtocolVersion,
        },
        Case {
            name: "missing token",
            join_first: false,
            frames: vec![bin(join_msg(String::new(), "meadow"))],
            expect: CloseCode::InvalidToken,
        },
        Case {
            name: "forged token",
            join_first: false,
            frames: vec![bin(join_msg(forged, "meadow"))],
            expect: CloseCode::InvalidToken,
        },
        Case {
            name: "expired token",
            join_first: false,
            frames: vec![bin(join_msg(token_expiring(9, "eve", -10), "meadow"))],
            expect: CloseCode::InvalidToken,
        },
        Case {
            name: "unknown zone",
            join_first: false,
            frames: vec![bin(join_msg(token(9, "eve"), "atlantis"))],
            expect: CloseCode::UnknownZone,
        },
        Case {
            name: "command before join",
            join_first: false,
            frames: vec![bin(C::Ping(respawn_proto::Ping { client_time: 1 }))],
            expect: CloseCode::JoinRequired,
        },
        Case { name: "silence instead of join", join_first: false, frames: vec![], expect: CloseCode::JoinTimeout },
        Case {
            name: "malformed frame after join",
            join_first: true,
            frames: vec![Message::Binary(vec![0x0a, 0xff].into())],
            expect: CloseCode::InvalidPayload,
        },
        Case {
            name: "oversized frame after join",
            join_first: true,
            frames: vec![Message::Binary(vec![7u8; 64 * 1024].into())],
            expect: CloseCode::TooBig,
        },
        Case { name: "command flood", join_first: true, frames: flood, expect: CloseCode::PolicyViolation },
    ]
}

#[tokio::test]
async fn bad_input_is_refused_with_a_close_code_and_counted_while_others_play() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let url = zone.ws_url();
    let (mut bystander, _) = Client::join(&url, 1, "ann", "meadow").await?;
    let before = scrape(zone.addr).await?;
    for (i, case) in cases().into_iter().enumerate() {
        let mut c = if case.join_first {
            Client::join(&url, 100 + i as u64, "eve", "meadow").await?.0
        } else {
            Client::connect(&url).await?
        };
        for frame in case.frames {
            // The server may close mid-burst; later sends then fail, which is fine.
            if c.send_raw(frame).await.is_err() {
                break;
            }
        }
        let closed = c.closed(T).await.map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
        assert_eq!(closed.code, case.expect.code(), "{}: closed with {closed:?}", case.name);
        assert!(!closed.reason.is_empty(), "{}: the close carries a reason", case.name);
        let m = scrape(zone.addr).await?;
        let series = format!(r#"respawn_client_errors_total{{reason="{}"}}"#, case.expect.as_str());
        let was = metric(&before, &series).unwrap_or(0.0);
        assert!(metric(&m, &series).unwrap_or(0.0) > was, "{}: {series} counted", case.name);

        // The bystander keeps getting updates and answers.
        bystander.send(C::Ping(respawn_proto::Ping { client_time: i as u64 })).await?;
        bystander
            .next_matching(T, |b| matches!(b, S::Pong(p) if p.client_time == i as u64).then_some(()))
            .await
            .map_err(|e| anyhow::anyhow!("bystander after {}: {e}", case.name))?;
    }
    // Only the bystander remains.
    support::wait_metric(zone.addr, r#"respawn_zone_players{zone="meadow"}"#, 1.0).await?;
    Ok(())
}

#[tokio::test]
async fn admin_drain_tells_players_refuses_joins_and_exits_cleanly() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let url = zone.ws_url();
    let (mut ann, _) = Client::join(&url, 1, "ann", "meadow").await?;
    let (mut bob, _) = Client::join(&url, 2, "bob", "caverns").await?;
    assert_eq!(support::http(zone.addr, "GET", "/readyz", None).await?.0, 200);
    assert_eq!(support::http(zone.addr, "GET", "/healthz", None).await?.0, 200);

    assert_eq!(support::http(zone.addr, "POST", "/admin/drain", None).await?.0, 401);
    assert_eq!(support::http(zone.addr, "POST", "/admin/drain", Some("wrong-token-wrong-token")).await?.0, 401);
    assert_eq!(support::http(zone.addr, "GET", "/readyz", None).await?.0, 200, "refused calls change nothing");
    assert_eq!(support::http(zone.addr, "POST", "/admin/drain", Some(support::ADMIN_TOKEN)).await?.0, 202);

    // 202: the drain runs on its own task, which turns readiness off first.
    respawn_harness::wait_until("readiness off after the drain request", Duration::from_secs(3), || async {
        let (status, body) = support::http(zone.addr, "GET", "/readyz", None).await?;
        Ok((status, body.trim()) == (503, "draining"))
    })
    .await?;
    for c in [&mut ann, &mut bob] {
        let notice = c.next_matching(T, |b| if let S::Notice(n) = b { Some(n.clone()) } else { None }).await?;
        assert_eq!(notice.kind, NoticeKind::Shutdown as i32);
        assert!(notice.deadline_ms > 0);
    }
    let mut late = Client::connect(&url).await?;
    late.send(join_msg(token(3, "cat"), "meadow")).await?;
    assert_eq!(late.closed(T).await?.code, CloseCode::Draining.code());

    ann.send(C::Leave(respawn_proto::Leave {})).await?;
    assert_eq!(ann.closed(T).await?.code, CloseCode::Normal.code());
    drop(bob);

    let (status, log) = zone.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "exit status {status}; log:\n{log}");
    let steps = [
        "drain requested through the admin API",
        "drain: readiness off",
        "drain: refusing new joins",
        "drain: players told of the shutdown",
        "drain: wait over",
        "closing remaining connections and stopping zones",
        "stopped cleanly",
    ];
    let mut at = 0;
    for step in steps {
        let found = log[at..].find(step).unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{log}"));
        at += found + step.len();
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_drain_closes_stragglers_at_the_deadline() -> Result<()> {
    let config = support::TEST_CONFIG.replace("drain_deadline_secs = 10", "drain_deadline_secs = 1");
    let zone = ZoneProcess::start_with(&config)?;
    let (mut ann, _) = Client::join(&zone.ws_url(), 1, "ann", "meadow").await?;
    let pid = zone.pid().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
    assert!(status.success());
    let notice = ann.next_matching(T, |b| if let S::Notice(n) = b { Some(n.kind) } else { None }).await?;
    assert_eq!(notice, NoticeKind::Shutdown as i32);
    // Ann ignores the notice; the server closes her at the deadline.
    assert_eq!(ann.closed(T).await?.code, CloseCode::GoingAway.code());
    let (status, log) = zone.wait_exit(Duration::from_secs(10))?;
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("deadline reached with players still connected"), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_server_told_which_zones_hosts_only_those_and_lists_their_characters() -> Result<()> {
    let zone = ZoneProcess::start_with_args(support::TEST_CONFIG, &["--zones", "caverns"])?;
    let url = zone.ws_url();
    let (_cat, _) = Client::join(&url, 3, "cat", "caverns").await?;
    let mut ann = Client::connect(&url).await?;
    let refused = ann.conn.join(token(1, "ann"), None, "", "meadow", T).await;
    assert!(refused.is_err(), "meadow is configured but not hosted here");

    assert_eq!(support::http(zone.addr, "GET", "/admin/characters", None).await?.0, 401);
    let (status, body) = support::http(zone.addr, "GET", "/admin/characters", Some(support::ADMIN_TOKEN)).await?;
    assert_eq!(status, 200, "{body}");
    let rosters: respawn_api::admin::Rosters = serde_json::from_str(&body)?;
    let held: Vec<(&str, Vec<(u64, bool)>)> = rosters
        .zones
        .iter()
        .map(|z| (z.zone.as_str(), z.characters.iter().map(|c| (c.player, c.connected)).collect()))
        .collect();
    assert_eq!(held, [("caverns", vec![(3, true)])]);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["zone", "--token-key", support::TOKEN_KEY, "--zones", "caverns,nowhere"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"nowhere\" is not a zone of the configuration"), "{err}");
    Ok(())
}

/// Two servers on one set of stores: the zone runs on one only. An owner
/// paused for longer than its lease loses the zone to a server started
/// meanwhile, and once it runs again it stops the zone without writing: its
/// players are told to log in again, and find the zone at the new owner.
#[tokio::test]
async fn a_zone_runs_on_one_server_and_an_owner_paused_past_its_lease_gives_it_up() -> Result<()> {
    let dir = respawn_harness::TempDir::new("leases")?;
    let data = dir.path().join("data");
    let first = ZoneProcess::start_full_with(support::TEST_CONFIG, &data, &[])?;
    let (mut ann, _) = Client::join(&first.ws_url(), 1, "ann", "meadow").await?;

    // Started once the first runs the zone, a second server waits out the
    // lease, which the first keeps renewing, and does not run the zone.
    // Each server has an outbox of its own (the zones' events are local).
    let outbox = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let second = ZoneProcess::start_full_with(support::TEST_CONFIG, &data, &["--outbox-dir", &outbox("second")])?;
    let refused = Client::connect(&second.ws_url()).await?.conn.join(token(2, "bob"), None, "", "meadow", T).await;
    assert!(refused.is_err(), "meadow runs on the first server only");
    assert!(second.log().contains("another live server runs it"), "{}", second.log());
    drop(second);

    // The first is paused past its lease (between two writes: see
    // `lock_every_zone`): a third server takes the zone.
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &first.pid().to_string()]).status();
    let between_writes = support::lock_every_zone(&data)?;
    assert!(signal("-STOP")?.success());
    drop(between_writes);
    let third = ZoneProcess::start_full_with(support::TEST_CONFIG, &data, &["--outbox-dir", &outbox("third")]);
    let (_third, carol) = match third {
        Ok(third) => {
            let carol = Client::join(&third.ws_url(), 3, "carol", "meadow").await;
            (third, carol)
        }
        Err(e) => {
            signal("-CONT")?;
            return Err(e);
        }
    };
    assert!(signal("-CONT")?.success());
    let (mut carol, _) = carol?;

    // Awake again, the first learns that and stops the zone, writing nothing.
    let closed = ann.closed(Duration::from_secs(10)).await?;
    assert_eq!(closed.code, CloseCode::Draining.code(), "{closed:?}");
    assert!(closed.reason.contains("log in again"), "{closed:?}");
    support::wait_metric(first.addr, r#"respawn_zone_leases_lost_total{zone="meadow"}"#, 1.0).await?;
    assert!(first.log().contains("another server now owns this zone"), "{}", first.log());
    let refused = Client::connect(&first.ws_url()).await?.conn.join(token(4, "dan"), None, "", "meadow", T).await;
    assert!(refused.is_err(), "the first no longer runs meadow");
    // At the third, the zone goes on.
    carol.send(C::Move(respawn_proto::MoveInput { seq: 1, vx: 5, vy: 0 })).await?;
    carol.next_matching(T, |b| matches!(b, S::Update(u) if u.acked_seq == 1).then_some(())).await?;
    Ok(())
}

/// A spare (`--standby --take-over`) on the same stores leaves a live
/// server's zones alone, and runs them once that server is lost: from the
/// state it stored, its players resuming their characters there.
#[tokio::test]
async fn a_spare_runs_the_zones_of_a_lost_server_once_their_leases_run_out() -> Result<()> {
    let dir = respawn_harness::TempDir::new("take-over")?;
    let data = dir.path().join("data");
    let owner = ZoneProcess::start_full_with(support::TEST_CONFIG, &data, &[])?;
    let (mut ann, welcome) = Client::join(&owner.ws_url(), 1, "ann", "meadow").await?;
    ann.send(C::Move(respawn_proto::MoveInput { seq: 1, vx: 5, vy: 0 })).await?;
    ann.next_matching(T, |b| matches!(b, S::Update(u) if u.acked_seq == 1).then_some(())).await?;
    let outbox = dir.path().join("spare-outbox").to_string_lossy().into_owned();
    let spare = ZoneProcess::start_full_with(
        support::TEST_CONFIG,
        &data,
        &["--standby", "--take-over", "--outbox-dir", &outbox],
    )?;
    // Longer than a lease and the spare's grace: the owner keeps renewing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let taken = r#"respawn_zone_taken_over_total{zone="meadow"}"#;
    assert_eq!(metric(&scrape(spare.addr).await?, taken), None, "nothing taken from a live owner");
    drop(owner);

    // The owner is killed: once its leases run out, the spare runs its zones.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while metric(&scrape(spare.addr).await?, taken) != Some(1.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "not taken over:
{}",
            spare.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::wait_metric(spare.addr, r#"respawn_zone_taken_over_total{zone="caverns"}"#, 1.0).await?;
    let m = scrape(spare.addr).await?;
    assert_eq!(metric(&m, r#"respawn_zone_restores_total{source="hot",zone="meadow"}"#), Some(1.0), "{m}");
    let mut back = join_resuming(&spare.ws_url(), &welcome.resume_token).await?;
    let resumed = back.next_matching(T, |b| if let S::Welcome(w) = b { Some(w.clone()) } else { None }).await?;
    assert!(resumed.resumed, "Ann's character came back with the zone");
    back.send(C::Move(respawn_proto::MoveInput { seq: 2, vx: -5, vy: 0 })).await?;
    back.next_matching(T, |b| matches!(b, S::Update(u) if u.acked_seq == 2).then_some(())).await?;
    Ok(())
}

#[tokio::test]
async fn admin_announcements_and_kicks_reach_players() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let url = zone.ws_url();
    let (mut ann, _) = Client::join(&url, 1, "ann", "meadow").await?;
    let (mut bob, _) = Client::join(&url, 2, "bob", "meadow").await?;
    let (mut cat, _) = Client::join(&url, 3, "cat", "caverns").await?;
    let admin = Some(support::ADMIN_TOKEN);

    assert_eq!(support::http(zone.addr, "POST", "/admin/announce?text=hi", None).await?.0, 401);
    assert_eq!(support::http(zone.addr, "POST", "/admin/announce?text=%20", admin).await?.0, 400);
    assert_eq!(support::http(zone.addr, "POST", "/admin/announce?text=hi&zone=nowhere", admin).await?.0, 404);
    let (status, _) =
        support::http(zone.addr, "POST", "/admin/announce?text=double%20xp%20weekend&zone=meadow", admin).await?;
    assert_eq!(status, 202);
    for c in [&mut ann, &mut bob] {
        let n = c.next_matching(T, |b| if let S::Notice(n) = b { Some(n.clone()) } else { None }).await?;
        assert_eq!((n.kind, n.text.as_str()), (NoticeKind::Announcement as i32, "double xp weekend"));
    }
    let cat_saw = cat.next_matching(Duration::from_millis(300), |b| matches!(b, S::Notice(_)).then_some(())).await;
    assert!(cat_saw.is_err(), "the other zone is not told");

    assert_eq!(support::http(zone.addr, "POST", "/admin/kick?player=2", None).await?.0, 401);
    assert_eq!(support::http(zone.addr, "POST", "/admin/kick?player=bob", admin).await?.0, 400);
    assert_eq!(support::http(zone.addr, "POST", "/admin/kick?player=2&reason=cheating", admin).await?.0, 202);
    let n = bob.next_matching(T, |b| if let S::Notice(n) = b { Some(n.clone()) } else { None }).await?;
    assert_eq!((n.kind, n.text.as_str()), (NoticeKind::Kick as i32, "cheating"));
    let closed = bob.closed(T).await?;
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::Kicked.code(), "cheating"));
    support::wait_metric(zone.addr, r#"respawn_zone_players{zone="meadow"}"#, 1.0).await?;
    let m = scrape(zone.addr).await?;
    assert_eq!(metric(&m, r#"respawn_zone_disconnects_total{reason="kicked",zone="meadow"}"#), Some(1.0));
    Ok(())
}

#[tokio::test]
async fn a_players_command_limit_survives_reconnecting() -> Result<()> {
    // Two commands per second, bursts of two: a fresh limit takes two commands at once.
    let config = support::TEST_CONFIG.replacen("commands_per_second = 50", "commands_per_second = 2", 1);
    let server = ZoneProcess::start_with(&config)?;
    let url = server.ws_url();
    let move_ = |seq| C::Move(respawn_proto::MoveInput { seq, vx: 1, vy: 0 });
    // Spend the burst, leave, come straight back, send two more: a limit kept
    // for the player refuses at least one (it refills one per 500 ms), a
    // fresh one would take both. A machine too slow to come back within a
    // second gets more tries; a fresh limit never refuses in any of them.
    for attempt in 0..3u64 {
        let player = 61 + attempt;
        let (mut first, _) = Client::join(&url, player, "quick", "meadow").await?;
        first.send(move_(1)).await?;
        first.send(move_(2)).await?;
        first.conn.close().await;
        support::wait_metric(server.addr, "respawn_connections", 0.0).await?;
        let (mut again, _) = Client::join(&url, player, "quick", "meadow").await?;
        again.send(move_(3)).await?;
        again.send(move_(4)).await?;
        let outcome = again
            .next_matching(T, |b| match b {
                S::Rejected(r) => Some(Some(r.reason.clone())),
                S::Update(u) if u.acked_seq == 4 => Some(None),
                _ => None,
            })
            .await?;
        if let Some(reason) = outcome {
            assert_eq!(reason, "rate_limited");
            // Another player is not affected.
            let (mut other, _) = Client::join(&url, 90, "calm", "meadow").await?;
            other.send(move_(1)).await?;
            let accepted = other
                .next_matching(T, |b| match b {
                    S::Rejected(r) => Some(Err(r.reason.clone())),
                    S::Update(u) if u.acked_seq == 1 => Some(Ok(())),
                    _ => None,
                })
                .await?;
            assert_eq!(accepted, Ok(()), "the other player's command was accepted");
            return Ok(());
        }
    }
    anyhow::bail!("three reconnections got a full burst back: the player's limit was not kept")
}

/// A malicious client cannot become another player, read another player's
/// private state (gold, XP, inventory travel only in the owner's own `you`),
/// or act on another player's session: every attempt is refused with a close
/// code, and the other player keeps playing untouched.
#[tokio::test]
async fn a_client_cannot_act_as_another_player_or_read_their_private_state() -> Result<()> {
    let zone = ZoneProcess::start()?;
    let url = zone.ws_url();
    let (mut ann, ann_welcome) = Client::join(&url, 101, "ann", "meadow").await?;
    let ann_resume = ann_welcome.resume_token.clone();
    assert!(!ann_resume.is_empty());

    // Tokens are the identity: a token of Mallory's with Ann's id swapped in, or
    // one signed with another key, is refused.
    let mallory = token(666, "mallory");
    let mut parts: Vec<&str> = mallory.split('.').collect();
    parts[1] = "101";
    let forged = parts.join(".");
    let other_key = respawn_token::TokenKey::new(b"not-the-server-key-at-all").expect("key");
    let claims = respawn_token::Claims { player_id: 101, name: "ann".into(), expires_at: u64::MAX / 2 };
    let foreign = other_key.sign(&claims).expect("sign");
    for bad in [forged, foreign] {
        let mut c = Client::connect(&url).await?;
        c.send(join_msg(bad, "meadow")).await?;
        let closed = c.closed(T).await?;
        assert_eq!(closed.code, CloseCode::InvalidToken.code(), "{closed:?}");
    }
    // A guessed or malformed resume token without a session token gets nothing.
    for (guess, why) in [
        ("101.0123456789abcdef0123456789abcdef", "unknown, used or expired resume token"),
        ("0123456789abcdef0123456789abcdef", "malformed resume token"),
        ("../101.0123456789abcdef0123456789abcdef", "malformed resume token"),
    ] {
        let closed = resume_with(&url, guess).await?;
        assert_eq!(closed.code, CloseCode::InvalidToken.code(), "{closed:?}");
        assert!(closed.reason.contains(why), "{guess}: {closed:?}");
    }

    // Mallory plays in the same zone: she sees Ann's public state only.
    let (mut mal, mal_welcome) = Client::join(&url, 666, "mallory", "meadow").await?;
    let ann_id = ann_welcome.entity_id;
    let seen = mal
        .next_matching(T, |b| match b {
            S::Update(u) => u.entered.iter().find(|e| e.id == ann_id).cloned(),
            _ => None,
        })
        .await?;
    assert_eq!(seen.name, "ann");
    let public = respawn_proto::EntityState {
        id: seen.id,
        kind: seen.kind,
        x: seen.x,
        y: seen.y,
        hp: seen.hp,
        max_hp: seen.max_hp,
        level: seen.level,
        name: seen.name.clone(),
        ..Default::default()
    };
    // Gold, XP and inventory exist only in `you`, which each connection gets for its own player.
    assert_eq!(seen, public, "another player's entity carries position, health, level and name only");

    // Joining again on her connection cannot switch her to Ann.
    mal.send(join_msg(token(101, "ann"), "meadow")).await?;
    let error = mal.next_matching(T, |b| matches!(b, S::Error(_)).then_some(())).await;
    assert!(error.is_ok(), "a second join on one connection is answered with an error, not obeyed");

    // Her leaving removes her character, not Ann's; Ann keeps getting updates.
    mal.send(C::Leave(respawn_proto::Leave {})).await?;
    let mal_id = mal_welcome.entity_id;
    let left = ann.next_matching(T, |b| match b {
        S::Update(u) => u.left.contains(&mal_id).then_some(()),
        _ => None,
    });
    left.await?;
    let still = ann.next_matching(T, |b| matches!(b, S::Update(_)).then_some(())).await;
    assert!(still.is_ok(), "Ann still plays");

    // The admin API is not reachable with a player's token.
    let (status, _) = support::http(zone.addr, "POST", "/admin/kick?player=101", Some(&token(666, "mallory"))).await?;
    assert_eq!(status, 401);

    // Ann's resume token takes her character back once; used again, it is refused.
    let mut back = join_resuming(&url, &ann_resume).await?;
    let welcome = back.next_matching(T, |b| if let S::Welcome(w) = b { Some(w.clone()) } else { None }).await?;
    assert!(welcome.resumed && welcome.resume_token != ann_resume, "resumed, with a new token");
    let again = resume_with(&url, &ann_resume).await?;
    assert!(again.reason.contains("unknown, used or expired resume token"), "{again:?}");
    Ok(())
}

/// Connects and joins meadow with only a resume token.
async fn join_resuming(url: &str, resume_token: &str) -> Result<Client> {
    let mut c = Client::connect(url).await?;
    c.send(C::Join(respawn_proto::Join {
        protocol_version: respawn_proto::PROTOCOL_VERSION,
        resume_token: resume_token.into(),
        zone: "meadow".into(),
        ..Default::default()
    }))
    .await?;
    Ok(c)
}

/// [`join_resuming`], answering how the server closed.
async fn resume_with(url: &str, resume_token: &str) -> Result<support::Closed> {
    join_resuming(url, resume_token).await?.closed(T).await
}

/// `--admin-listen` keeps `/admin/*` off the players' port; an address that
/// failed ten admin calls within a minute is refused (429), right token or not.
#[tokio::test]
async fn the_admin_api_listens_apart_and_refuses_an_address_that_keeps_guessing() -> Result<()> {
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let zone = ZoneProcess::start_with_args(support::TEST_CONFIG, &["--admin-listen", &admin_addr.to_string()])?;
    let admin = Some(support::ADMIN_TOKEN);
    assert_eq!(support::http(zone.addr, "GET", "/admin/info", admin).await?.0, 404, "not on the players' port");
    assert_eq!(support::http(admin_addr, "GET", "/admin/info", admin).await?.0, 200);
    assert_eq!(support::http(admin_addr, "GET", "/healthz", None).await?.0, 404, "the admin API alone");
    for guess in 0..10 {
        let (status, _) = support::http(admin_addr, "GET", "/admin/info", Some(&format!("guess-{guess}"))).await?;
        assert_eq!(status, 401, "guess {guess}");
    }
    let refused = respawn_api::http::exchange(&admin_addr.to_string(), "GET", "/admin/info", admin, None).await?;
    assert_eq!(refused.status, 429, "the right token after ten guesses: {}", refused.body);
    let retry: u64 = refused.header("retry-after").unwrap_or_default().parse()?;
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(support::http(zone.addr, "GET", "/healthz", None).await?.0, 200, "players unaffected");
    Ok(())
}

/// Whether `GET /healthz` of `server` (`ip:port`) answers `ok` from `host`, within 2 s.
fn healthy_from(host: &respawn_harness::netns::Host, server: &str) -> bool {
    let (ip, port) = server.split_once(':').unwrap_or_default();
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/{port} && printf 'GET /healthz HTTP/1.0\\r\\nhost: x\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let mut probe = std::process::Command::new("timeout");
    probe.args(["2", "bash", "-c", &script]);
    host.command(&probe)
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim_end().ends_with("\r\n\r\nok"))
}

#[test]
fn a_zone_server_on_a_host_of_its_own_is_lost_to_a_cut_link_a_partition_and_the_hosts_death() -> Result<()> {
    use respawn_harness::netns::{Direction, Lan};
    let mut lan = Lan::new()?;
    let (server_host, client_host) = (lan.host("zone")?, lan.host("client")?);
    let dir = support::TempDir::new("netns-zone")?;
    let config = dir.path().join("zone.toml");
    std::fs::write(&config, support::TEST_CONFIG)?;
    let listen = format!("{}:7350", server_host.addr);
    let zone = respawn_harness::zone::ZoneCommand::new(env!("CARGO_BIN_EXE_respawn"), &listen)
        .config(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .token_key(support::TOKEN_KEY);
    let mut child = server_host
        .command(&zone.std_command())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("zone.log"))?)
        .spawn()?;
    let line = respawn_harness::zone::listening_line(&mut child, support::STARTUP)?;
    assert!(line.contains(&listen), "{line:?}");
    assert!(healthy_from(&client_host, &listen), "reached across the LAN");

    // An asymmetric partition: the client's requests arrive, the answers do not.
    client_host.block(&server_host, Direction::Incoming)?;
    assert!(!healthy_from(&client_host, &listen), "no answer gets through");
    client_host.heal()?;
    assert!(healthy_from(&client_host, &listen), "healed");

    server_host.cut()?;
    assert!(!healthy_from(&client_host, &listen), "a cut link reaches nothing");
    server_host.mend()?;
    assert!(healthy_from(&client_host, &listen), "mended");

    server_host.kill_all();
    let status = child.wait()?;
    assert!(!status.success(), "killed: {status}");
    assert!(!healthy_from(&client_host, &listen), "a dead host answers nothing");

    let namespace = server_host.namespace.clone();
    drop(lan);
    let left = std::process::Command::new("ip").args(["netns", "list"]).output()?;
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&namespace), "every namespace is removed");
    Ok(())
}

/// `GET /metrics` of `server` (`ip:port`) from `host`, if it answers within 2 s.
fn metrics_from(host: &respawn_harness::netns::Host, server: &str) -> Option<String> {
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sf", "--max-time", "2", &format!("http://{server}/metrics")]);
    let out = host.command(&curl).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `metrics_from` until `check` holds, for at most `limit`.
fn wait_until(
    host: &respawn_harness::netns::Host,
    server: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while !metrics_from(host, server).is_some_and(|m| check(&m)) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{server}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Zone servers on three hosts of their own, Redis on a fourth. When the
/// owner's host dies, exactly one of the two spares takes each zone over;
/// when that one is then cut off from Redis, the other spare takes its zones,
/// and once the partition heals the cut-off server stops them.
#[test]
fn zones_fail_over_across_hosts_once_to_one_spare_and_a_partitioned_owner_gives_them_up() -> Result<()> {
    use anyhow::Context;
    use respawn_harness::netns::{Direction, Lan};
    let mut lan = Lan::new()?;
    let (store, client) = (lan.host("store")?, lan.host("client")?);
    let hosts = [lan.host("a")?, lan.host("b")?, lan.host("c")?];
    let dir = support::TempDir::new("netns-failover")?;
    let mut redis = std::process::Command::new("redis-server");
    redis.args(["--port", "6379", "--bind", &store.addr.to_string(), "--save", "", "--appendonly", "no"]);
    redis.args(["--protected-mode", "no"]).arg("--dir").arg(dir.path());
    let _redis = store.command(&redis).stdout(std::process::Stdio::null()).spawn()?;
    let config = dir.path().join("zone.toml");
    std::fs::write(&config, support::TEST_CONFIG)?;
    let start = |host: &respawn_harness::netns::Host, spare: bool| -> Result<(std::process::Child, String)> {
        let listen = format!("{}:7350", host.addr);
        let mut zone = respawn_harness::zone::ZoneCommand::new(env!("CARGO_BIN_EXE_respawn"), &listen)
            .config(&config)
            .arg("--data-dir")
            .arg(dir.path().join(&host.name))
            .arg("--redis-url")
            .arg(format!("redis://{}:6379/0", store.addr))
            .token_key(support::TOKEN_KEY);
        if spare {
            zone = zone.arg("--standby").arg("--take-over");
        }
        let mut child = host
            .command(&zone.std_command())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join(format!("{}.log", host.name)))?)
            .spawn()?;
        let line = respawn_harness::zone::listening_line(&mut child, support::STARTUP)?;
        anyhow::ensure!(line.contains(&listen), "{line:?}");
        Ok((child, listen))
    };
    let ticking = |zone: &str| {
        let series = format!(r#"respawn_zone_tick{{zone="{zone}"}}"#);
        move |m: &str| metric(m, &series).is_some_and(|t| t > 0.0)
    };
    let taken = |m: &str, zone: &str| metric(m, &format!(r#"respawn_zone_taken_over_total{{zone="{zone}"}}"#));
    let (_owner, a) = start(&hosts[0], false)?;
    let log_of = |host: &respawn_harness::netns::Host| {
        std::fs::read_to_string(dir.path().join(format!("{}.log", host.name))).unwrap_or_default()
    };
    wait_until(&client, &a, T, ticking("meadow")).with_context(|| log_of(&hosts[0]))?;
    let (_b_child, b) = start(&hosts[1], true)?;
    let (_c_child, c) = start(&hosts[2], true)?;

    // The owner's host dies: every process killed, its link cut.
    hosts[0].kill_all();
    hosts[0].cut()?;
    let died = std::time::Instant::now();
    let spares = [(&hosts[1], &b), (&hosts[2], &c)];
    for zone in ["meadow", "caverns"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let counts: Vec<f64> = spares
                .iter()
                .map(|(_, s)| metrics_from(&client, s).and_then(|m| taken(&m, zone)).unwrap_or(0.0))
                .collect();
            if counts.iter().sum::<f64>() >= 1.0 {
                assert_eq!(counts.iter().sum::<f64>(), 1.0, "{zone} taken over by exactly one spare: {counts:?}");
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "{zone} not taken over");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let runs_meadow = |s: &str| metrics_from(&client, s).is_some_and(|m| taken(&m, "meadow") == Some(1.0));
    let (owner, other) = if runs_meadow(&b) { (spares[0], spares[1]) } else { (spares[1], spares[0]) };
    wait_until(&client, owner.1, T, ticking("meadow"))?;
    // Seen from outside, to the nearest look (every 100 ms): see RELIABILITY.md.
    eprintln!("host death to meadow ticking on a spare: {} ms", died.elapsed().as_millis());

    // The new owner is cut off from Redis (and from nothing else): the other spare takes meadow.
    owner.0.block(&store, Direction::Both)?;
    let cut = std::time::Instant::now();
    wait_until(&client, other.1, Duration::from_secs(15), |m| taken(m, "meadow") == Some(1.0))?;
    wait_until(&client, other.1, T, ticking("meadow"))?;
    eprintln!("partition to meadow ticking on the other spare: {} ms", cut.elapsed().as_millis());
    // Healed, the cut-off server learns it lost the zone, and stops it without writing.
    owner.0.heal()?;
    let lost = r#"respawn_zone_leases_lost_total{zone="meadow"}"#;
    wait_until(&client, owner.1, Duration::from_secs(15), |m| metric(m, lost) == Some(1.0))?;
    let log = log_of(owner.0);
    assert!(log.contains("another server now owns this zone"), "{log}");
    drop(lan);
    Ok(())
}

/// `--log-format json` (what the Kubernetes manifests set): every line one
/// JSON object with its level and message, the event's fields (zone, tick)
/// at the top level, and the server's registry id on each.
#[tokio::test]
async fn json_logs_are_one_object_a_line_naming_the_server_zone_and_tick() -> Result<()> {
    let zone =
        ZoneProcess::start_with_args(support::TEST_CONFIG, &["--log-format", "json", "--server-id", "zone-json"])?;
    let (_ann, _) = Client::join(&zone.ws_url(), 1, "ann", "meadow").await?;
    let log = zone.log();
    let lines: Vec<serde_json::Value> = log.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(line["level"].is_string() && line["message"].is_string(), "{line}");
        assert_eq!(line["server"], "zone-json", "{line}");
    }
    let restored = lines.iter().find(|l| l["message"] == "zone state restored" && l["zone"] == "meadow");
    assert!(restored.is_some_and(|l| l["tick"].is_u64()), "{log}");
    Ok(())
}
