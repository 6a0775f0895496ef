//! The recovery drills, run for real: `kill -9` of the zone server with bots
//! playing (embedded stores and real Redis + MongoDB-compatible server),
//! Redis dying mid-play, MongoDB dying mid-play, every zone server killed at
//! once, and the whole site lost. Timing verdicts (RTO) are recorded in RELIABILITY.md,
//! not asserted here; what is asserted is what must never happen: a player
//! not getting the character back, or an acknowledged command lost.

mod support;

use anyhow::Result;
use respawn_api::admin::RestoreSource;
use respawn_drill::{DrillReport, EventTally, HostFaultReport, ProblemKind, Scenario, SiteReport, Verdict};
use support::drill;

fn check_recovery(r: &DrillReport) {
    assert_eq!(r.commands_lost, 0, "no acknowledged command is lost: {r:?}");
    assert!(r.players_before > 0, "{r:?}");
    check_events(&r.events);
    assert!(!r.kills.is_empty(), "{r:?}");
    for kill in &r.kills {
        assert_eq!(kill.players_resumed, kill.players_before, "every player got the character back: {kill:?}");
        assert!(kill.rto_ms > 0.0, "{kill:?}");
    }
}

/// Every event generated is in the ledger once, but those of ticks a
/// restore took back (never durable, so never published). A killed
/// process's are counted at its last look, an instant before the kill: a
/// tick made durable in that instant is replayed and its events stored, so
/// the count is at most what was rolled back.
fn check_events(events: &EventTally) {
    assert!(events.events_generated > 0, "the bots' play made events: {events:?}");
    let at_least = events.events_generated - events.events_rolled_back;
    assert!((at_least..=events.events_generated).contains(&events.events_persisted), "{events:?}");
    assert_eq!((events.events_lost, events.events_duplicated), (0, 0), "{events:?}");
}

/// All zone servers killed at once, then the whole site lost: each server
/// restores its zone, every player gets the character back, the events add up.
/// On embedded stores and on real services.
#[test]
fn all_zones_down_and_site_loss_bring_every_player_back() -> Result<()> {
    for args in [&["all-zones-down", "--bots", "6"][..], &["all-zones-down", "--real", "--bots", "6"]] {
        let r: SiteReport = drill(args)?;
        assert_eq!((r.scenario, r.findings.verdict), (Scenario::AllZonesDown, Verdict::Pass), "{r:?}");
        assert_eq!(r.zone_servers, 2);
        assert_eq!(r.players_resumed, r.players_before, "{r:?}");
        assert_eq!((r.commands_lost, r.characters_lost), (0, 0), "{r:?}");
        check_events(&r.events);
    }

    let r: SiteReport = drill(&["site-loss", "--real", "--bots", "6"])?;
    assert_eq!(r.scenario, Scenario::SiteLoss);
    let restored: Vec<(&str, Option<RestoreSource>)> =
        r.restored_from.iter().map(|z| (z.zone.as_str(), z.source)).collect();
    assert_eq!(restored, [("meadow", Some(RestoreSource::Cold)), ("caverns", Some(RestoreSource::Cold))], "{r:?}");
    assert_eq!(r.players_resumed, r.players_before, "everyone was in the cold snapshots: {r:?}");
    assert_eq!(r.characters_lost, 0, "{r:?}");
    assert_eq!(r.events.events_duplicated, 0, "{r:?}");
    // What a site loss may lose (play since the last cold snapshot, events not
    // yet in MySQL) is bounded by the verdict, which is the drill's own.
    assert_eq!(r.findings.verdict, Verdict::Pass, "{r:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_respawn")).args(["drill", "site-loss"]).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("site-loss needs --real"), "{err}");
    Ok(())
}

/// The drills run one after another: each is a whole deployment with bots.
#[test]
fn drills_lose_nothing_acknowledged_and_recover() -> Result<()> {
    let dir = support::TempDir::new("drill-report")?;
    let report = dir.path().join("zone-crash.md");
    let r: DrillReport = drill(&["zone-crash", "--kills", "2", "--bots", "8", "--report", &report.to_string_lossy()])?;
    check_recovery(&r);
    assert_eq!(r.scenario, Scenario::ZoneCrash);
    for kill in &r.kills {
        assert_eq!(kill.restore_source, Some(RestoreSource::Hot), "{kill:?}");
    }
    // --report: the markdown report, with the chart of tick and CCU beside it.
    let md = std::fs::read_to_string(&report)?;
    assert!(md.contains("# Drill zone-crash") && md.contains("**Verdict: PASS**"), "{md}");
    assert!(md.contains("| rto_ms |") && md.contains("## Timeline") && md.contains("](zone-crash.svg)"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("zone-crash.svg"))?;
    assert!(svg.starts_with("<svg") && svg.contains("CCU (max 8)"), "the chart saw every bot: {svg}");
    assert!(svg.matches("<polyline").count() >= 2, "both series are drawn: {svg}");

    let r: DrillReport = drill(&["zone-crash", "--real", "--kills", "2", "--bots", "8"])?;
    check_recovery(&r);
    assert!(r.real_services);

    let r: DrillReport = drill(&["redis-down", "--real", "--bots", "8"])?;
    check_recovery(&r);
    assert_eq!(r.kills[0].restore_source, Some(RestoreSource::Cold), "{r:?}");
    // A blocked tick would last seconds (storage timeouts); the budget is a whole tick period.
    assert!(r.max_tick_ms <= 50.0, "no tick over budget during the outage: {r:?}");
    assert!(
        !r.findings.problems.iter().any(|p| p.kind == ProblemKind::Snapshots),
        "cold snapshots were written during the outage and hot ones resumed after it: {r:?}"
    );

    let r: DrillReport = drill(&["mongo-down", "--real", "--bots", "8"])?;
    check_recovery(&r);
    assert_eq!(r.scenario, Scenario::MongoDown);
    assert_eq!(
        r.kills[0].restore_source,
        Some(RestoreSource::Hot),
        "Redis holds the state while MongoDB is down: {r:?}"
    );
    assert!(r.max_tick_ms <= 50.0, "no tick over budget during the outage: {r:?}");
    assert!(
        !r.findings.problems.iter().any(|p| matches!(
            p.kind,
            ProblemKind::Snapshots | ProblemKind::RestoreSource | ProblemKind::PlayersNotBack
        )),
        "cold snapshots failed and resumed, hot ones went on, nobody was dropped: {r:?}"
    );
    Ok(())
}

/// The drills on hosts of their own (network namespaces: `scripts/test` runs
/// as root with iproute2 and nftables). A host lost or cut off from the
/// stores: each zone taken over once, every player back, nothing
/// acknowledged lost, no tick acknowledged by two owners, the events add up.
/// Cut off from the platform: nothing moves, nobody is dropped. What the
/// players send lost on the way: they come back to the same server.
#[test]
fn a_lost_or_cut_off_host_fails_over_once_and_a_platform_partition_changes_nothing() -> Result<()> {
    if let Err(why) = respawn_harness::netns::Lan::available() {
        // `scripts/test` runs as root; only a hand-run `cargo test` gets here.
        anyhow::bail!("network namespaces cannot be made here: {why}");
    }
    for (scenario, name) in [(Scenario::HostLoss, "host-loss"), (Scenario::PartitionStore, "partition-store")] {
        let r: HostFaultReport = drill(&[name, "--real", "--bots", "8"])?;
        assert_eq!(r.scenario, scenario, "{r:?}");
        assert_eq!((r.players_resumed, r.commands_lost), (r.players_before, 0), "{r:?}");
        assert!(r.takeovers.values().all(|n| *n == 1) && r.takeovers.len() == 2, "{r:?}");
        assert!(r.zones_moved_ms.is_some(), "{r:?}");
        assert!(r.owners.sessions > 0 && r.owners.conflicts.is_empty(), "{r:?}");
        check_events(&r.events);
        if scenario == Scenario::PartitionStore {
            // Its events of the ticks never durable (if the bots made any then) are withdrawn:
            // `check_events` finds every other one stored once.
            assert!(r.superseded_ms.is_some(), "the cut-off owner stopped its zones: {r:?}");
        }
    }
    let r: HostFaultReport = drill(&["partition-platform", "--real", "--bots", "8"])?;
    assert_eq!(r.findings.verdict, Verdict::Pass, "{r:?}");
    assert_eq!((r.sessions_lost, r.takeovers.values().sum::<u64>()), (0, 0), "{r:?}");
    check_events(&r.events);
    // The players cut off from their server (one way): they come back to it, nothing moves.
    let r: HostFaultReport = drill(&["partition-players", "--real", "--bots", "8"])?;
    assert_eq!(r.takeovers.values().sum::<u64>(), 0, "{r:?}");
    assert_eq!((r.players_resumed, r.commands_lost), (r.players_before, 0), "{r:?}");
    assert!(r.owners.sessions > 0 && r.owners.conflicts.is_empty(), "{r:?}");
    check_events(&r.events);
    // A slow, lossy network between the players and their server: reset players resume there, nothing moves.
    let r: HostFaultReport = drill(&["flaky-network", "--real", "--bots", "8", "--outage-secs", "10"])?;
    assert_eq!((r.scenario, r.findings.verdict), (Scenario::FlakyNetwork, Verdict::Pass), "{r:?}");
    assert_eq!((r.takeovers.values().sum::<u64>(), r.commands_lost), (0, 0), "{r:?}");
    assert!(r.owners.sessions > 0 && r.owners.conflicts.is_empty(), "{r:?}");
    check_events(&r.events);
    Ok(())
}
