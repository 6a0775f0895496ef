//! The two-owner checker: from what every bot's sessions had acknowledged
//! ([`AckSpan`]: by which owner of the zone, through which durable ticks,
//! when), whether any tick of a zone was acknowledged by two owners, and for
//! how long two servers both acknowledged commands for one zone. An owner is
//! a server's address and the zone's timeline there: a zone restored, taken
//! over or handed off starts a new timeline.

use std::collections::BTreeMap;

use respawn_client::AckSpan;
use serde::{Deserialize, Serialize};

use crate::findings::{Problem, ProblemKind};

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnersCheck {
    /// Sessions that had commands acknowledged.
    pub sessions: usize,
    /// Owners seen acknowledging commands, over every zone.
    pub owners: usize,
    /// Ticks of a zone that two owners both acknowledged commands through.
    pub ticks_acknowledged_twice: u64,
    /// How long two owners of one zone both acknowledged commands (their
    /// windows, first to last acknowledgement, overlapping), summed over zones.
    pub two_owners_ms: f64,
    /// Each pair of owners that overlapped.
    pub conflicts: Vec<String>,
}

/// One owner's acknowledgements, over every session it served.
#[derive(Debug, Clone, Copy)]
struct Window {
    first_tick: u64,
    last_tick: u64,
    first_at_us: u64,
    last_at_us: u64,
}

impl OwnersCheck {
    pub(crate) fn of(spans: &[AckSpan]) -> Self {
        let mut zones: BTreeMap<&str, BTreeMap<(&str, u64), Window>> = BTreeMap::new();
        for s in spans {
            let window = Window {
                first_tick: s.first_tick,
                last_tick: s.last_tick,
                first_at_us: s.first_at_us,
                last_at_us: s.last_at_us,
            };
            zones
                .entry(&s.zone)
                .or_default()
                .entry((&s.server, s.timeline))
                .and_modify(|w| {
                    w.first_tick = w.first_tick.min(s.first_tick);
                    w.last_tick = w.last_tick.max(s.last_tick);
                    w.first_at_us = w.first_at_us.min(s.first_at_us);
                    w.last_at_us = w.last_at_us.max(s.last_at_us);
                })
                .or_insert(window);
        }
        let mut check = OwnersCheck { sessions: spans.len(), ..Default::default() };
        for (zone, owners) in &zones {
            check.owners += owners.len();
            let owners: Vec<_> = owners.iter().collect();
            for (i, ((server_a, timeline_a), a)) in owners.iter().enumerate() {
                for ((server_b, timeline_b), b) in &owners[i + 1..] {
                    let ticks = (a.last_tick.min(b.last_tick) + 1).saturating_sub(a.first_tick.max(b.first_tick));
                    let us = a.last_at_us.min(b.last_at_us).saturating_sub(a.first_at_us.max(b.first_at_us));
                    let overlap_in_time = a.first_at_us.max(b.first_at_us) < a.last_at_us.min(b.last_at_us);
                    if ticks == 0 && !overlap_in_time {
                        continue;
                    }
                    check.ticks_acknowledged_twice += ticks;
                    check.two_owners_ms += us as f64 / 1e3;
                    check.conflicts.push(format!(
                        "{zone}: {server_a} (timeline {timeline_a}, ticks {}-{}) and {server_b} (timeline \
                         {timeline_b}, ticks {}-{}): {ticks} ticks both acknowledged, {:.0} ms both acknowledging",
                        a.first_tick,
                        a.last_tick,
                        b.first_tick,
                        b.last_tick,
                        us as f64 / 1e3
                    ));
                }
            }
        }
        check
    }

    /// What misses the target: no tick acknowledged by two owners, no time with two owners acknowledging.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.sessions == 0 {
            problems.push(Problem::new(ProblemKind::NothingTested, "no session had a command acknowledged"));
        }
        if !self.conflicts.is_empty() {
            problems.push(Problem::new(
                ProblemKind::TwoOwners,
                format!(
                    "{} ticks acknowledged by two owners, {:.0} ms with two owners acknowledging: {}",
                    self.ticks_acknowledged_twice,
                    self.two_owners_ms,
                    self.conflicts.join("; ")
                ),
            ));
        }
        problems
    }

    pub(crate) fn print(&self) {
        println!(
            "  two owners         {:>9.0} ms, {} ticks acknowledged twice        0  ({} owners, {} sessions checked)",
            self.two_owners_ms, self.ticks_acknowledged_twice, self.owners, self.sessions
        );
        for conflict in &self.conflicts {
            println!("    {conflict}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(zone: &str, server: &str, timeline: u64, ticks: (u64, u64), at_ms: (u64, u64)) -> AckSpan {
        AckSpan {
            zone: zone.into(),
            server: server.into(),
            timeline,
            first_tick: ticks.0,
            last_tick: ticks.1,
            first_at_us: at_ms.0 * 1_000,
            last_at_us: at_ms.1 * 1_000,
            acks: 10,
        }
    }

    #[test]
    fn a_failover_that_resumes_after_the_last_acknowledged_tick_has_one_owner_at_a_time() {
        let history = [
            span("meadow", "ws://a/ws", 1, (10, 500), (0, 25_000)),
            span("meadow", "ws://a/ws", 1, (12, 498), (100, 24_990)),
            span("meadow", "ws://b/ws", 2, (501, 700), (27_000, 37_000)),
            span("caverns", "ws://a/ws", 3, (10, 500), (0, 25_000)),
        ];
        let check = OwnersCheck::of(&history);
        assert_eq!((check.owners, check.sessions), (3, 4));
        assert!(check.problems().is_empty(), "{check:?}");
    }

    #[test]
    fn ticks_both_owners_acknowledged_and_time_both_acknowledged_are_found() {
        let history = [
            span("meadow", "ws://a/ws", 1, (10, 520), (0, 30_000)),
            span("meadow", "ws://b/ws", 2, (501, 700), (27_000, 37_000)),
        ];
        let check = OwnersCheck::of(&history);
        assert_eq!(check.ticks_acknowledged_twice, 20);
        assert_eq!(check.two_owners_ms, 3_000.0);
        assert_eq!(check.problems().iter().map(|p| p.kind).collect::<Vec<_>>(), [ProblemKind::TwoOwners]);
    }

    #[test]
    fn the_same_ticks_on_two_timelines_of_one_server_are_two_owners() {
        // A server that restored the zone over itself acknowledged tick 505 on both timelines.
        let history = [
            span("meadow", "ws://a/ws", 1, (10, 510), (0, 1_000)),
            span("meadow", "ws://a/ws", 2, (505, 600), (2_000, 3_000)),
        ];
        assert_eq!(OwnersCheck::of(&history).ticks_acknowledged_twice, 6);
    }

    #[test]
    fn a_history_with_nothing_acknowledged_tested_nothing() {
        let kinds: Vec<_> = OwnersCheck::of(&[]).problems().iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::NothingTested]);
    }
}
