//! Rolling updates against a live deployment: a platform server, zone
//! servers of two builds that report different versions (the second one is
//! built by `scripts/test` with `RESPAWN_BUILD_VERSION`), sharing their zone
//! state, and bots logged in through the platform playing throughout.
//!
//! In order: a guide-faithful rollout to the new build, a hand-off rollout
//! back to the first build, two rollouts the compatibility gate stops (a
//! build that cannot read the snapshots, one that cannot serve the clients),
//! and a rollback. After each, every bot is playing with its character, its
//! inventory and every acknowledged command.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use respawn_api::http;
use respawn_client::bot::{Access, BotStats, Fleet};
use respawn_drill::{PlatformLossReport, ProblemKind, RolloutReport, Scenario, Verdict};
use respawn_platform::rollout::Mode;
use serde_json::Value;
use support::{next_build, Platform, TempDir, ZoneProcess, TEST_CONFIG};

const OPERATOR: &str = "rollout-test-operator-token";
const BOTS: u64 = 6;

struct Deployment {
    platform: Platform,
    data: TempDir,
    outboxes: u32,
}

impl Deployment {
    /// A platform server (no Kafka or MySQL behind it: rollouts need neither) and a shared state directory.
    async fn start() -> Result<Self> {
        let platform = Platform::for_rollouts(OPERATOR).await?;
        Ok(Self { platform, data: TempDir::new("rollout")?, outboxes: 0 })
    }

    fn addr(&self) -> String {
        self.platform.addr.to_string()
    }

    /// A zone server of `bin` on the shared state, heartbeating into the
    /// platform as the `--server-id` in `extra`, else as `zone-<n>`.
    fn zone(&mut self, bin: &str, config: &str, extra: &[&str]) -> Result<ZoneProcess> {
        self.outboxes += 1;
        let outbox = self.data.path().join(format!("outbox-{}", self.outboxes));
        let id = extra.iter().skip_while(|a| **a != "--server-id").nth(1).map(|id| (*id).to_owned());
        let credential = support::credential(&id.unwrap_or_else(|| format!("zone-{}", self.outboxes)));
        let (platform, outbox) = (self.addr(), outbox.to_string_lossy().into_owned());
        let mut args = vec!["--platform", &platform, "--server-token", &credential, "--outbox-dir", &outbox];
        args.extend_from_slice(extra);
        ZoneProcess::start_build(bin, config, &self.data.path().join("state"), &args)
    }

    async fn servers(&self) -> Result<Vec<Value>> {
        let (code, body) = http::request(&self.addr(), "GET", "/v1/servers", Some(OPERATOR)).await?;
        if code != 200 {
            bail!("GET /v1/servers answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits (20 s at most) until the registry satisfies `want`.
    async fn wait_servers(&self, what: &str, want: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = self.servers().await?;
            if want(&list) {
                return Ok(list);
            }
            if Instant::now() > deadline {
                bail!("the registry never showed {what}: {list:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `respawn ctl ARGS` against the platform: exit success and its output.
    /// The bots keep playing meanwhile (the call does not hold their runtime).
    async fn ctl(&self, args: &[&str]) -> Result<(bool, String)> {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
            .arg("ctl")
            .args(args)
            .env("RESPAWN_PLATFORM_URL", self.addr())
            .env("RESPAWN_OPERATOR_TOKEN", OPERATOR)
            .output()
            .await?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("$ respawn ctl {}\n{text}", args.join(" "));
        Ok((out.status.success(), text))
    }
}

fn hosts_all(server: &Value) -> bool {
    let mut zones: Vec<&str> = server["zones"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    zones.sort_unstable();
    zones == ["caverns", "meadow"]
}

/// Waits (60 s at most) until every bot is connected again and has played a little.
async fn all_playing(stats: &BotStats) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.connected.load(Relaxed) < BOTS {
        if Instant::now() > deadline {
            bail!("only {} of {BOTS} bots are playing", stats.connected.load(Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let updates = stats.updates.load(Relaxed);
    while stats.updates.load(Relaxed) < updates + BOTS * 20 {
        if Instant::now() > deadline {
            bail!("the bots are connected but get no updates");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Nothing any bot had was lost: characters, inventories, acknowledged commands.
fn nothing_lost(stats: &BotStats, when: &str) -> Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let resumes = stats.resumes();
    let lost_acks: u32 = resumes.iter().map(|r| r.lost_acknowledged).sum();
    let mut frozen: Vec<Duration> = resumes.iter().map(|r| r.frozen).collect();
    frozen.sort();
    println!(
        "{when}: {} resumes so far, freezes {frozen:?}, {} refused while moving, {} migrations",
        resumes.len(),
        stats.refused_moving.load(Relaxed),
        stats.migrations.load(Relaxed)
    );
    if stats.characters_lost.load(Relaxed) != 0 {
        bail!("{when}: {} characters lost", stats.characters_lost.load(Relaxed));
    }
    if stats.inventories_lost.load(Relaxed) != 0 {
        bail!("{when}: {} characters came back with less than they had", stats.inventories_lost.load(Relaxed));
    }
    if lost_acks != 0 {
        bail!("{when}: {lost_acks} acknowledged commands lost");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_rollout_then_handoff_then_refused_builds_then_rollback() -> Result<()> {
    let next = next_build();
    let current = env!("CARGO_BIN_EXE_respawn").to_owned();
    let mut d = Deployment::start().await?;

    // History archived every second: step 2 compares each zone's replay on both builds.
    let config = TEST_CONFIG.replace("[limits]", "[persistence]\nhistory_segment_secs = 1\n\n[limits]");
    let first = d.zone(&current, &config, &[])?;
    let second = d.zone(&next, &config, &["--standby"])?;
    let list = d.wait_servers("both builds", |l| l.len() == 2).await?;
    let versions: Vec<&str> = list.iter().filter_map(|s| s["version"].as_str()).collect();
    let (v1, v2) = (env!("CARGO_PKG_VERSION"), versions.iter().find(|v| **v != env!("CARGO_PKG_VERSION")));
    let v2 = v2.context("the second build reports the same version")?.to_string();
    println!("versions: {v1} and {v2}");

    let zones = vec!["meadow".to_owned(), "caverns".to_owned()];
    let fleet = Fleet::spawn(Access::Login { platform: d.addr() }, &zones, BOTS as u32, "roller");
    let stats = fleet.stats.clone();
    all_playing(&stats).await?;

    // 1. Guide-faithful: players asked to reconnect, zones move once the old server is empty.
    let (ok, out) = d.ctl(&["rollout", "--to", &v2, "--wait-secs", "30"]).await?;
    assert!(ok, "guide rollout failed:\n{out}");
    for step in 1..=7 {
        assert!(out.contains(&format!("[{step}/7")), "step {step} not shown:\n{out}");
    }
    replay_report(&out, v1, &v2);
    let (status, log) = first.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "the old server stopped cleanly: {status}\n{log}");
    let list = d.wait_servers("the new build hosting every zone", |l| l.len() == 1 && hosts_all(&l[0])).await?;
    assert_eq!(list[0]["version"], v2.as_str());
    all_playing(&stats).await?;
    nothing_lost(&stats, "after the guide rollout")?;

    // 2. Hand-off back to the first build: zones move live, players follow.
    let third = d.zone(&current, &config, &["--standby"])?;
    d.wait_servers("the standby first build", |l| l.len() == 2).await?;
    let migrations_before = stats.migrations.load(std::sync::atomic::Ordering::Relaxed);
    gold_found(second.addr).await?;
    let (ok, out) = d.ctl(&["rollout", "--to", v1, "--handoff"]).await?;
    assert!(ok, "hand-off rollout failed:\n{out}");
    // The bots found gold: one more of it on the second build (its planted rule change).
    assert!(replay_report(&out, &v2, v1) >= 1, "the rule change shows in the report:\n{out}");
    let (status, log) = second.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "the old server stopped cleanly: {status}\n{log}");
    let list = d.wait_servers("the first build hosting every zone", |l| l.len() == 1 && hosts_all(&l[0])).await?;
    assert_eq!(list[0]["version"], v1);
    all_playing(&stats).await?;
    nothing_lost(&stats, "after the hand-off")?;
    let migrations = stats.migrations.load(std::sync::atomic::Ordering::Relaxed) - migrations_before;
    assert_eq!(migrations, BOTS, "every bot followed its zone");

    // 3. A build that cannot read the snapshots: the adoption is refused, the zone resumes where it was.
    let refusing = d.zone(&next, &with_testing("snapshot_format = 99"), &["--standby"])?;
    d.wait_servers("the refusing build", |l| l.len() == 2).await?;
    let (ok, out) = d.ctl(&["rollout", "--to", &refusing.ws_url(), "--handoff"]).await?;
    assert!(!ok, "a build that cannot read the snapshots took the zones:\n{out}");
    assert!(out.contains("rolled_back") && out.contains("format 3"), "{out}");
    drop(refusing);
    let list =
        d.wait_servers("the first build alone, hosting every zone", |l| l.len() == 1 && hosts_all(&l[0])).await?;
    assert_eq!(list[0]["state"], "ready", "the old server takes players again");
    all_playing(&stats).await?;
    nothing_lost(&stats, "after the refused snapshot format")?;

    // 4. A build that cannot serve the connected clients: stopped before anything changes.
    let refusing = d.zone(&next, &with_testing("protocol_version = 99"), &["--standby"])?;
    d.wait_servers("the incompatible build", |l| l.len() == 2).await?;
    // It refuses today's clients itself, with a reason.
    let mut client = support::Client::connect(&refusing.ws_url()).await?;
    client
        .send(respawn_proto::client_message::Body::Join(respawn_proto::Join {
            protocol_version: respawn_proto::PROTOCOL_VERSION,
            token: support::token(1, "old-client"),
            zone: "meadow".into(),
            resume_token: String::new(),
            character_ticket: String::new(),
        }))
        .await?;
    let refused = client.closed(Duration::from_secs(5)).await?;
    assert_eq!(refused.code, respawn_proto::CloseCode::UnsupportedProtocolVersion.code(), "{refused:?}");
    let expected = format!("server speaks protocol versions 99 to 99, client sent {}", respawn_proto::PROTOCOL_VERSION);
    assert!(refused.reason.contains(&expected), "{refused:?}");
    let (ok, out) = d.ctl(&["rollout", "--to", &refusing.ws_url(), "--handoff"]).await?;
    assert!(!ok, "a build that cannot serve the clients took the zones:\n{out}");
    assert!(out.contains("protocol") && out.contains("nothing was changed"), "{out}");
    drop(refusing);
    d.wait_servers("the first build alone", |l| l.len() == 1 && hosts_all(&l[0]) && l[0]["state"] == "ready").await?;

    // 5. Rollback: back to the version the last successful rollout left, the same way (hand-off).
    let fourth = d.zone(&next, &config, &["--standby"])?;
    d.wait_servers("the standby second build", |l| l.len() == 2).await?;
    let (ok, out) = d.ctl(&["rollback"]).await?;
    assert!(ok, "rollback failed:\n{out}");
    assert!(out.contains("handoff, rollback"), "{out}");
    let (status, log) = third.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "the old server stopped cleanly: {status}\n{log}");
    let list = d.wait_servers("the second build hosting every zone", |l| l.len() == 1 && hosts_all(&l[0])).await?;
    assert_eq!(list[0]["version"], v2.as_str());
    all_playing(&stats).await?;
    nothing_lost(&stats, "after the rollback")?;

    fleet.stop().await;
    drop(fourth);
    Ok(())
}

/// Step 2's replay report in a rollout's output: each zone's last minutes
/// replayed on the `old` build and the `new`, and where they part (every
/// field that differs a gold, the second build's planted rule change).
/// How many zones parted.
fn replay_report(out: &str, old: &str, new: &str) -> usize {
    for zone in ["meadow", "caverns"] {
        let compared = format!("replay check: zone {zone}: builds {old} and {new} ");
        assert!(out.contains(&compared), "{compared:?} not in:\n{out}");
    }
    let fields: Vec<&str> = out.lines().filter(|l| l.contains("replay check:   tick ")).collect();
    assert!(fields.iter().all(|l| l.contains(" gold ")), "only gold differs: {fields:?}");
    out.matches("then diverge at tick").count()
}

/// Waits until a bot on the server at `addr` found gold, and its tick is
/// in the history (archived every second).
async fn gold_found(addr: std::net::SocketAddr) -> Result<()> {
    for _ in 0..600 {
        let scrape = support::scrape(addr).await?;
        let found = scrape
            .lines()
            .filter(|l| l.starts_with("respawn_zone_events_total{") && l.contains("type=\"gold_changed\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if found > 0.0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no bot found gold in a minute")
}

/// The test layout with one `[testing]` setting (before the zones: a TOML table ends at the next header).
fn with_testing(setting: &str) -> String {
    TEST_CONFIG.replacen("[[zones]]", &format!("[testing]\n{setting}\n\n[[zones]]"), 1)
}

/// What Kubernetes does with `deploy/k8s/zone.yaml`: the StatefulSet's two
/// pods start with `--claim --handoff-on-drain`, each with its own
/// credential file (each zone is granted to one of them). A rolling update
/// replaces them one at a time from the highest ordinal: the terminated
/// pod's preStop hook (`respawn zone-stop`, with the pod's credential)
/// drains it, its zones moving live to the other pod with their players;
/// the pod comes back under the same name as the new version and stands by,
/// and the next pod hands its zones to it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_pods_claim_zones_once_and_hand_them_off_when_stopped() -> Result<()> {
    let (next, current) = (next_build(), env!("CARGO_BIN_EXE_respawn").to_owned());
    let mut d = Deployment::start().await?;
    // Each pod's admin API on a port of its own, as the manifest has it: the
    // platform calls it at the address the pod registered.
    let admin: Vec<String> = (0..2)
        .map(|_| Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string()))
        .collect::<Result<_>>()?;
    let pod = |ordinal: usize| {
        let id = format!("respawn-zone-{ordinal}");
        ["--claim", "--handoff-on-drain", "--server-id", &id, "--admin-listen", &admin[ordinal]].map(str::to_owned)
    };
    let mut pods = Vec::new();
    for ordinal in 0..2 {
        let args = pod(ordinal);
        pods.push(d.zone(&current, TEST_CONFIG, &args.iter().map(String::as_str).collect::<Vec<_>>())?);
    }
    let list = d.wait_servers("both pods", |l| l.len() == 2).await?;
    let mut hosted: Vec<&str> =
        list.iter().flat_map(|s| s["zones"].as_array().into_iter().flatten()).filter_map(Value::as_str).collect();
    hosted.sort_unstable();
    assert_eq!(hosted, ["caverns", "meadow"], "each zone granted to exactly one pod: {list:#?}");

    let zones = vec!["meadow".to_owned(), "caverns".to_owned()];
    let fleet = Fleet::spawn(Access::Login { platform: d.addr() }, &zones, BOTS as u32, "pod");
    let stats = fleet.stats.clone();
    all_playing(&stats).await?;

    // The preStop hook reads the pod's credential from the mounted Secret.
    let credentials = TempDir::new("pod-credentials")?;
    for ordinal in [1, 0] {
        let id = format!("respawn-zone-{ordinal}");
        let file = credentials.path().join(&id);
        std::fs::write(&file, format!("{}\n", support::credential(&id)))?;
        let old = pods.remove(ordinal);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(["zone-stop", "--listen", &old.addr.to_string(), "--admin-listen", &admin[ordinal]])
            .env("RESPAWN_SERVER_TOKEN_FILE", &file)
            .output()
            .await?;
        assert!(out.status.success(), "zone-stop {id}: {}", String::from_utf8_lossy(&out.stderr));
        let (status, log) = old.wait_exit(Duration::from_secs(30))?;
        assert!(status.success(), "{id} stopped cleanly: {status}\n{log}");
        let gone = format!("{id} gone, the other pod hosting every zone");
        d.wait_servers(&gone, |l| l.len() == 1 && l[0]["id"] != id.as_str() && hosts_all(&l[0])).await?;
        // Back under the same name as the new version: every zone is hosted, so it stands by.
        let args = pod(ordinal);
        let new = d.zone(&next, TEST_CONFIG, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let list = d.wait_servers(&format!("{id} back"), |l| l.len() == 2).await?;
        let back = list.iter().find(|s| s["id"] == id.as_str()).context("the pod registered again")?;
        assert_eq!(back["zones"], serde_json::json!([]), "{id} stands by");
        pods.insert(ordinal, new);
    }
    let list = d.wait_servers("the new version hosting every zone", |l| l.len() == 2).await?;
    let owner = list.iter().find(|s| hosts_all(s)).context("one pod hosts every zone")?;
    assert_eq!(owner["id"], "respawn-zone-1", "{list:#?}");
    assert!(list.iter().all(|s| s["version"] != env!("CARGO_PKG_VERSION")), "both pods run the new version: {list:#?}");
    all_playing(&stats).await?;
    nothing_lost(&stats, "after the pods were replaced")?;
    let migrations = stats.migrations.load(std::sync::atomic::Ordering::Relaxed);
    assert!(migrations >= BOTS, "every bot followed its zone at least once: {migrations} migrations");
    fleet.stop().await;
    drop(pods);
    Ok(())
}

/// `respawn drill rollout`: the report's figures, and a pass.
fn check_rollout_drill(r: &RolloutReport, mode: Mode) {
    println!("drill rollout ({mode:?}): {r:?}");
    assert_eq!((r.scenario, r.mode), (Scenario::Rollout, mode));
    assert_ne!(r.from_version, r.to_version, "two builds, two versions");
    assert_eq!((r.commands_lost, r.characters_lost, r.inventories_lost), (0, 0, 0), "{r:?}");
    assert_eq!(r.players_after, r.players_before, "{r:?}");
    assert!(r.players_before > 0, "{r:?}");
    assert_eq!(r.findings.verdict, Verdict::Pass, "{r:?}");
}

#[test]
fn the_rollout_drill_hands_zones_off_live_on_real_services() -> Result<()> {
    let r: RolloutReport =
        support::drill(&["rollout", "--handoff", "--real", "--bots", "12", "--next-build", &next_build()])?;
    check_rollout_drill(&r, Mode::Handoff);
    assert!(r.pause_ms < 1_000.0, "player-visible pause under 1 s: {r:?}");
    Ok(())
}

#[test]
fn the_rollout_drill_follows_the_guides_steps_on_embedded_stores() -> Result<()> {
    let r: RolloutReport = support::drill(&["rollout", "--bots", "8", "--next-build", &next_build()])?;
    check_rollout_drill(&r, Mode::Guide);
    Ok(())
}

/// Two platform replicas behind one address; the one running a hand-off
/// rollout is killed as zones move: the other finishes it (or rolls it
/// back), every zone runs on one server, every player is back, and no alert
/// is told twice, though the killed replica restarts and looks again.
#[test]
fn a_rollout_survives_the_loss_of_the_platform_replica_running_it() -> Result<()> {
    let r: PlatformLossReport =
        support::drill(&["platform-loss", "--real", "--bots", "8", "--next-build", &next_build()])?;
    println!("drill platform-loss: {r:?}");
    assert_eq!(r.scenario, Scenario::PlatformLoss);
    assert_eq!(r.killed_at_step, 6, "killed as the zones move: {r:?}");
    assert!(r.takeover_ms > 0 && r.finished_after_kill_ms >= r.takeover_ms, "{r:?}");
    assert!(r.zone_hosts.values().all(|hosts| hosts.len() == 1), "each zone on one server: {r:?}");
    assert_eq!((r.commands_lost, r.characters_lost, r.inventories_lost), (0, 0, 0), "{r:?}");
    assert_eq!(r.players_after, r.players_before, "{r:?}");
    assert!(r.notifications > 0 && r.alerts_told_twice.is_empty(), "{r:?}");
    let kinds: Vec<ProblemKind> = r.findings.problems.iter().map(|p| p.kind).collect();
    assert_eq!(r.findings.verdict, Verdict::Pass, "{kinds:?}: {r:?}");
    Ok(())
}
