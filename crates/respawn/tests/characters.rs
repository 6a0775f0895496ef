//! Characters the platform keeps: what a player earned is what they find
//! again after leaving and signing in, a second sign-in, a zone server's
//! `kill -9`, a switch to another zone and a walk through an exit into
//! another; a ticket of a stay that ended lets nothing in. Real processes: MariaDB and Tansu (from
//! `scripts/services`), the platform server, a zone server publishing its
//! events through Kafka.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use respawn_api::http::{self, CallError};
use respawn_api::players::{GuestSignUp, PlayGrant, PlayerApi, SignIn};
use respawn_proto::{server_message::Body as S, CloseCode, PlayerStats};
use serde_json::Value;
use support::{Client, Database, Platform, ZoneProcess, TEST_CONFIG, TOKEN_KEY};

const OPERATOR: &str = "characters-operator-token";

/// The player's record as operators see it (`GET /v1/players/{id}`).
async fn record(platform: &str, player: u64) -> Result<Value> {
    let (code, body) = http::request(platform, "GET", &format!("/v1/players/{player}"), Some(OPERATOR)).await?;
    if code != 200 {
        bail!("profile answered {code}: {body}");
    }
    Ok(serde_json::from_str::<Value>(&body)?["record"].clone())
}

/// Polls the record until `want` holds (`limit` at most).
async fn wait_record(
    platform: &str,
    player: u64,
    what: &str,
    limit: Duration,
    want: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let r = record(platform, player).await?;
        if want(&r) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!("the record never showed {what}: {r}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /v1/play`, retried while the character is still leaving another
/// zone (409) or no server is ready (503).
async fn play(api: &PlayerApi, token: &str, zone: &str) -> Result<PlayGrant> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match api.play(token, zone).await {
            Ok(grant) => return Ok(grant),
            Err(CallError::Refused { status: 409 | 503, answer }) if Instant::now() < deadline => {
                note_refusal(&answer);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("play {zone}: {e}"),
        }
    }
}

fn note_refusal(answer: &str) {
    eprintln!("play refused for now: {}", answer.trim());
}

/// Joins with a grant; answers the client, whether the zone gave back a
/// character it held, and the character's stats.
async fn join(grant: &PlayGrant) -> Result<(Client, bool, PlayerStats)> {
    let (client, welcome, you, _) = join_at(grant).await?;
    Ok((client, welcome.resumed, you))
}

/// [`join`], with the Welcome and where the character stands.
async fn join_at(grant: &PlayGrant) -> Result<(Client, respawn_proto::Welcome, PlayerStats, (i32, i32))> {
    let mut client = Client::connect(&grant.address).await?;
    let welcome = client
        .conn
        .join(grant.token.clone(), None, &grant.character_ticket, &grant.zone, Duration::from_secs(5))
        .await?;
    let me = welcome.entity_id;
    let (you, at) = client
        .next_matching(Duration::from_secs(5), |b| match b {
            S::Update(u) => {
                let at = u.entered.iter().find(|e| e.id == me).map(|e| (e.x, e.y));
                u.you.clone().zip(at)
            }
            _ => None,
        })
        .await?;
    Ok((client, welcome, you, at))
}

/// `me`'s x after `u`: sent whole (entered, changed) or as a step from `x`.
fn position_x(u: &respawn_proto::StateUpdate, me: u32, x: i32) -> Result<i32> {
    if let Some(e) = u.entered.iter().chain(&u.changed).find(|e| e.id == me) {
        return Ok(e.x);
    }
    Ok(u.moves()?.into_iter().find(|m| m.id == me).map_or(x, |m| x.saturating_add(m.dx)))
}

/// Walks the character in `client` west (stepping south when a wall is in
/// the way) until the zone says it travelled; answers the zone it went to.
async fn walk_west_until_travel(client: &mut Client, me: u32, start_x: i32) -> Result<String> {
    use respawn_proto::client_message::Body as C;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut seq, mut last_x, mut checked) = (1u32, i32::MAX, Instant::now());
    let mut x = start_x;
    let mut velocity = (-30, 0);
    client.send(C::Move(respawn_proto::MoveInput { seq, vx: velocity.0, vy: velocity.1 })).await?;
    loop {
        if Instant::now() > deadline {
            bail!("never reached the exit");
        }
        match client.next(Duration::from_secs(5)).await? {
            S::Notice(n) if n.kind == respawn_proto::NoticeKind::Travel as i32 => return Ok(n.travel_to),
            S::Update(u) => {
                x = position_x(&u, me, x)?;
                if checked.elapsed() < Duration::from_millis(400) {
                    continue;
                }
                // No way west for a while: a few steps south first.
                let next = if x >= last_x - 10 && velocity.0 != 0 { (0, 30) } else { (-30, 0) };
                (last_x, checked) = (x, Instant::now());
                if next != velocity {
                    velocity = next;
                    seq += 1;
                    client.send(C::Move(respawn_proto::MoveInput { seq, vx: velocity.0, vy: velocity.1 })).await?;
                }
            }
            _ => {}
        }
    }
}

fn progress(stats: &PlayerStats) -> (u32, u64, u64) {
    (stats.level, stats.xp, stats.gold)
}

fn recorded(r: &Value) -> (u32, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or_default();
    (n("level") as u32, n("xp"), n("gold"))
}

/// The conservation drill on embedded stores: characters travel, are taken
/// over, and live through two zone server kills, a hand-off and the
/// platform server's outage (players in zones play on, a sign-in is
/// refused); none is ever in two zones, none loses what was stored, and the
/// gold and items held are what the world gave out.
#[test]
fn the_conservation_drill_finds_no_copy_and_nothing_lost() -> Result<()> {
    conservation_holds(&["characters", "--bots", "8"])
}

/// The same on real Redis, MongoDB, broker and MariaDB servers.
#[test]
fn the_conservation_drill_on_real_services_finds_no_copy_and_nothing_lost() -> Result<()> {
    conservation_holds(&["characters", "--real", "--bots", "8"])
}

fn conservation_holds(args: &[&str]) -> Result<()> {
    let r: respawn_drill::CharactersReport = support::drill(args)?;
    assert_eq!(r.findings.verdict, respawn_drill::Verdict::Pass, "{r:?}");
    assert!(r.travels > 0 && r.takeovers > 0 && r.logouts > 0, "{r:?}");
    assert_eq!((r.crashes_survived, r.zones_handed_off, r.platform_outages), (2, 1, 1), "{r:?}");
    assert!(r.samples > 20, "{r:?}");
    assert_eq!((r.duplicates, r.progress_lost, r.records_off), (0, 0, 0), "{r:?}");
    assert!(r.gold_created > 0 && r.gold_held == r.gold_created, "{r:?}");
    assert_eq!(r.items_held, r.items_created, "{r:?}");
    Ok(())
}

#[tokio::test]
async fn a_character_keeps_what_it_earned_across_sign_ins_a_crash_and_a_zone_switch() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").expect("run through scripts/test");
    let db = Database::create("characters").await?;
    let group = format!("characters-{}", std::process::id());
    let platform = Platform::start_with(
        &brokers,
        &db.url(),
        &group,
        &["--server-key", support::SERVER_KEY, "--token-key", TOKEN_KEY, "--admin-token", OPERATOR],
    )?;
    platform.wait_healthy().await?;
    platform.wait_ready().await?;
    let addr = platform.addr.to_string();
    let dir = respawn_harness::TempDir::new("characters")?;
    let data = dir.path().join("data");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let credential = support::credential("characters-zone");
    let zone_args = ["--platform", addr.as_str(), "--server-token", &credential, "--kafka-brokers", brokers.as_str()];
    let settings = TEST_CONFIG.split("[[zones]]").next().unwrap_or_default();
    let config = format!("{settings}{}", respawn_harness::zone::SMALL_ZONES_WITH_EXITS);
    let zone = ZoneProcess::start_at_in(&config, &data, listen, &zone_args)?;

    // A guest plays (as a bot) until it has earned gold, then leaves.
    let api = PlayerApi::new(&addr);
    let guest = api.guest(&GuestSignUp::default()).await?;
    let (player, secret) = (guest.account_id, guest.device_secret.clone().unwrap_or_default());
    let access = respawn_client::Access::Guests { platform: addr.clone(), device_secrets: Arc::from([secret.clone()]) };
    let bot = respawn_client::Fleet::spawn(access, &["meadow".to_owned()], 1, "earner");
    wait_record(&addr, player, "gold earned in meadow", Duration::from_secs(90), |r| {
        r["gold"].as_u64().unwrap_or_default() > 0 && r["hold"] == "in_zone"
    })
    .await?;
    bot.stop().await;
    let rested =
        wait_record(&addr, player, "the character at rest", Duration::from_secs(20), |r| r["hold"] == "at_rest")
            .await?;
    let earned = recorded(&rested);
    assert!(earned.2 > 0, "{rested}");
    assert_eq!(
        (rested["incarnation"].as_u64(), rested["place"]["zone"].as_str()),
        (Some(1), Some("meadow")),
        "{rested}"
    );

    // Signed in again: the character comes back as it left, in a new stay.
    let session = api.sign_in(&SignIn::device(&secret)).await?;
    let first = play(&api, &session.session_token, "meadow").await?;
    let (mut client, resumed, you) = join(&first).await?;
    assert!(!resumed, "it was at rest: a new stay");
    assert_eq!(progress(&you), earned, "what it earned, after signing in again");

    // A second sign-in takes it over: the first connection is closed, no copy is made.
    let second_session = api.sign_in(&SignIn::device(&secret)).await?;
    let second = play(&api, &second_session.session_token, "meadow").await?;
    let (mut taken_over, resumed, you) = join(&second).await?;
    assert!(resumed, "the character in the zone was taken over");
    assert_eq!(progress(&you), earned);
    assert_eq!(client.closed(Duration::from_secs(5)).await?.code, CloseCode::Replaced.code());

    // kill -9: the zone server comes back from its files with the character in it.
    drop(zone);
    let zone = ZoneProcess::start_at_in(&config, &data, listen, &zone_args)?;
    let _ = taken_over.closed(Duration::from_secs(5)).await;
    let after_crash = play(&api, &second_session.session_token, "meadow").await?;
    let (meadow_client, resumed, you) = join(&after_crash).await?;
    assert!(resumed, "the restored zone still held the character");
    assert_eq!(progress(&you), earned, "nothing lost to the crash");

    // Another zone: the character is asked to leave meadow, saved, and brought to caverns.
    let mut meadow_client = meadow_client;
    let caverns = play(&api, &second_session.session_token, "caverns").await?;
    assert_eq!(meadow_client.closed(Duration::from_secs(5)).await?.code, CloseCode::Kicked.code());
    let (caverns_client, caverns_welcome, you, (caverns_x, _)) = join_at(&caverns).await?;
    assert!(!caverns_welcome.resumed);
    assert_eq!(progress(&you), earned, "the same character in the other zone");
    wait_record(&addr, player, "the character in caverns", Duration::from_secs(20), |r| {
        r["hold"] == "in_zone" && r["hold_zone"] == "caverns" && r["incarnation"] == 3
    })
    .await?;

    // The ticket of the stay in meadow that ended brings nothing in: not even the old state.
    let mut replay = Client::connect(&after_crash.address).await?;
    let refused = replay
        .conn
        .join(after_crash.token.clone(), None, &after_crash.character_ticket, "meadow", Duration::from_secs(5))
        .await;
    let refused = refused.expect_err("a stale ticket was let in").to_string();
    assert!(refused.contains(&CloseCode::CharacterUnavailable.code().to_string()), "{refused}");

    // It walks west into caverns' exit and arrives in meadow where that exit leads, with what it had.
    let mut caverns_client = caverns_client;
    let went_to = walk_west_until_travel(&mut caverns_client, caverns_welcome.entity_id, caverns_x).await?;
    let walked_in = Instant::now();
    assert_eq!(went_to, "meadow");
    assert_eq!(caverns_client.closed(Duration::from_secs(5)).await?.code, CloseCode::Travelled.code());
    let onward = play(&api, &second_session.session_token, "meadow").await?;
    let (mut meadow_client, welcome, you, at) = join_at(&onward).await?;
    let pause = walked_in.elapsed();
    eprintln!("travel caverns -> meadow: {pause:?} from the travel notice to the first update in meadow");
    assert!(!welcome.resumed);
    assert_eq!(progress(&you), earned, "the same character after travelling");
    assert_eq!(at, (2_500, 1_500), "it arrives where the exit leads");

    // It leaves meadow; at rest, the record is what it earned, and no stale writer was taken.
    meadow_client.send(respawn_proto::client_message::Body::Leave(respawn_proto::Leave {})).await?;
    let done = wait_record(&addr, player, "at rest after meadow", Duration::from_secs(20), |r| {
        r["hold"] == "at_rest" && r["incarnation"] == 4
    })
    .await?;
    assert_eq!(recorded(&done), earned, "{done}");
    assert_eq!(done["place"]["zone"].as_str(), Some("meadow"), "last stood in meadow");
    let metrics = http::scrape(&addr).await?;
    let stale = respawn_api::prom::sum(
        &respawn_api::prom::parse(&metrics),
        "respawn_platform_stale_character_events_total",
        &[],
    );
    assert_eq!(stale, 0.0, "no event of an ended stay reached the ledger");
    drop(zone);
    Ok(())
}
