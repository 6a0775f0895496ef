//! Comparing two builds' replays of one zone history: the contract between
//! `respawn replay --build` and the other binary's `respawn replay --trace`,
//! and between a rollout and the zone servers' `GET
//! /admin/zones/{zone}/replay`. Each build answers a [`ReplayTrace`] (the
//! digest of its state after every tick, and its whole state at a tick asked
//! for); [`Divergence`] is what the two traces say together. And the
//! dashboard's time machine: a zone server's [`Film`] of a window (where
//! everything was and what happened, tick by tick, replayed from the
//! journal), with a tick's whole state asked for as a [`ReplayTrace`]'s.
//!
//! States travel as JSON (a `respawn_zone::inspect::ZoneState` written,
//! a [`Value`] read), so a build that added or dropped a field still
//! compares with this one, field by field.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A checksum of a state as JSON: two builds that agree on a tick's state
/// give the same, whatever their snapshot formats.
pub fn digest(state: &Value) -> u32 {
    crc32fast::hash(state.to_string().as_bytes())
}

/// One tick's state digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickDigest {
    pub tick: u64,
    pub digest: u32,
}

/// A build's replay of a window of a zone's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayTrace {
    /// The build that replayed it.
    pub version: String,
    /// The tick of the state the replay started from (0: the zone's configuration).
    pub start_tick: u64,
    pub from_tick: u64,
    pub to_tick: u64,
    /// Each tick from `from_tick` through `to_tick`, in order.
    pub digests: Vec<TickDigest>,
    /// The whole state at the tick asked for, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

/// `GET /admin/zones/{zone}/replay`: which window of the kept history to replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayWindow {
    /// The last this many seconds kept (ignored when `from` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_secs: Option<u32>,
    /// Start from the state at this tick (another build's `start_tick`): both replay the same ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// The whole state at this tick too; the replay stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_at: Option<u64>,
}

impl ReplayWindow {
    /// The same ticks as `trace`, from the same start: what the other build is asked.
    pub fn same_as(trace: &ReplayTrace) -> Self {
        Self { start: Some(trace.start_tick), from: Some(trace.from_tick), to: Some(trace.to_tick), ..Self::default() }
    }

    /// The first tick where `this` and `other` disagree, and how many they
    /// agreed on before it. A tick one trace has and the other lacks is a
    /// disagreement too.
    pub fn first_divergence(this: &ReplayTrace, other: &ReplayTrace) -> (u64, Option<u64>) {
        let theirs: HashMap<u64, u32> = other.digests.iter().map(|d| (d.tick, d.digest)).collect();
        let mut agreed = 0;
        for mine in &this.digests {
            if theirs.get(&mine.tick) != Some(&mine.digest) {
                return (agreed, Some(mine.tick));
            }
            agreed += 1;
        }
        let extra = other.digests.iter().map(|d| d.tick).find(|t| !this.digests.iter().any(|m| m.tick == *t));
        (agreed, extra)
    }
}

/// A field two states disagree on: `player 42 gold`, `10` here, `12` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub field: String,
    /// The value on this build (`absent` when this build has no such field).
    pub this_build: String,
    pub other_build: String,
}

/// What two builds' replays of one window say together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub zone: String,
    pub this_build: String,
    pub other_build: String,
    pub from_tick: u64,
    pub to_tick: u64,
    /// Ticks both builds agreed on before the first divergent one (all of them if none).
    pub ticks_compared: u64,
    pub first_divergent_tick: Option<u64>,
    /// What differs at that tick (at most [`Divergence::SHOWN_FIELDS`]).
    pub fields: Vec<FieldDiff>,
    /// How many fields differ there in all.
    pub fields_differing: usize,
}

impl Divergence {
    /// The most differing fields a report lists.
    pub const SHOWN_FIELDS: usize = 50;

    /// The report of `this` and `other` (two traces of one window), with
    /// both builds' states at the first divergent tick when there is one.
    pub fn new(zone: &str, this: &ReplayTrace, other: &ReplayTrace, states: Option<(&Value, &Value)>) -> Self {
        let (ticks_compared, first_divergent_tick) = ReplayWindow::first_divergence(this, other);
        let fields = match (first_divergent_tick, states) {
            (Some(_), Some((mine, theirs))) => diff(mine, theirs),
            _ => Vec::new(),
        };
        Self {
            zone: zone.to_owned(),
            this_build: this.version.clone(),
            other_build: other.version.clone(),
            from_tick: this.from_tick,
            to_tick: this.to_tick,
            ticks_compared,
            first_divergent_tick,
            fields_differing: fields.len(),
            fields: fields.into_iter().take(Self::SHOWN_FIELDS).collect(),
        }
    }

    /// Report lines: `tick 42: player 1 gold 5 vs 6`, or that they agree.
    pub fn lines(&self) -> Vec<String> {
        let builds = format!("builds {} and {}", self.this_build, self.other_build);
        let Some(tick) = self.first_divergent_tick else {
            return vec![format!(
                "zone {}: {builds} agree on every tick from {} to {} ({} compared)",
                self.zone, self.from_tick, self.to_tick, self.ticks_compared
            )];
        };
        let mut lines = vec![format!(
            "zone {}: {builds} agree on {} ticks, then diverge at tick {tick}:",
            self.zone, self.ticks_compared
        )];
        lines.extend(
            self.fields.iter().map(|f| format!("  tick {tick}: {} {} vs {}", f.field, f.this_build, f.other_build)),
        );
        match self.fields_differing {
            0 => lines.push("  (no field differs: the two builds describe the same state differently)".into()),
            n if n > self.fields.len() => lines.push(format!("  … {} more fields differ", n - self.fields.len())),
            _ => {}
        }
        lines
    }
}

/// The fields `this` and `other` (two builds' states as JSON) disagree on, in field order.
pub fn diff(this: &Value, other: &Value) -> Vec<FieldDiff> {
    let (mut here, mut there) = (BTreeMap::new(), BTreeMap::new());
    fields(this, "", &mut here);
    fields(other, "", &mut there);
    let names: BTreeSet<&String> = here.keys().chain(there.keys()).collect();
    let absent = || "absent".to_owned();
    names
        .into_iter()
        .filter(|name| here.get(*name) != there.get(*name))
        .map(|name| FieldDiff {
            field: name.clone(),
            this_build: here.get(name).cloned().unwrap_or_else(absent),
            other_build: there.get(name).cloned().unwrap_or_else(absent),
        })
        .collect()
}

/// `value`'s scalar fields by name: nested objects join their keys with a
/// space, and a list of entities names each by its id field, which is the
/// list's name in the singular (`players` → `player 42`).
fn fields(value: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| if prefix.is_empty() { key.to_owned() } else { format!("{prefix} {key}") };
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let Value::Array(list) = v else {
                    fields(v, &join(key), out);
                    continue;
                };
                let id_key = key.strip_suffix('s').unwrap_or(key);
                for (i, element) in list.iter().enumerate() {
                    let label = match element.get(id_key) {
                        Some(id) => format!("{id_key} {}", scalar(id)),
                        None => format!("{} {i}", join(key)),
                    };
                    let mut named = BTreeMap::new();
                    fields(element, &label, &mut named);
                    named.remove(&format!("{label} {id_key}"));
                    if named.is_empty() {
                        out.insert(label, scalar(element));
                    }
                    out.extend(named);
                }
            }
        }
        scalar_value => {
            out.insert(prefix.to_owned(), scalar(scalar_value));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The longest window a film covers: a minute at 20 ticks a second.
pub const LONGEST_FILM_TICKS: u64 = 1200;

/// The most positions a film holds (ticks times entities): about 7 MB of
/// JSON, within what an admin call reads (`http::MAX_ANSWER_BYTES`). A
/// zone of 1,000 players fits 8 s of film.
pub const MOST_FILM_DOTS: usize = 160_000;

/// `GET /admin/zones/{zone}/film` (and the platform's `/v1/zones/{zone}/film`):
/// the window, each end a tick number or a UTC time like `2026-11-26T10:00:00Z`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilmWindow {
    pub from: String,
    pub to: String,
}

/// A window of a zone's history as the time machine plays it: every tick's
/// positions and events, replayed from the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Film {
    pub zone: String,
    pub zone_id: u32,
    /// The zone's size, in the positions' units.
    pub width: i32,
    pub height: i32,
    pub tick_hz: u32,
    /// The build that replayed it.
    pub version: String,
    /// One per tick, in order.
    pub frames: Vec<Frame>,
}

/// One tick of a [`Film`]: where everything was after it, and what happened in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub tick: u64,
    pub players: Vec<Dot>,
    pub npcs: Vec<Dot>,
    pub items: Vec<Dot>,
    pub events: Vec<ReplayedEvent>,
}

/// An entity's place: a player's id, or an NPC's or item's entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dot {
    pub id: u64,
    pub x: i32,
    pub y: i32,
}

/// One event of a replayed tick, as the event search shows events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayedEvent {
    /// `zone-epoch-tick-index` (`respawn_proto::events::event_id`), as the event search shows it.
    pub id: String,
    pub player: u64,
    pub kind: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(gold: u64, items: Value) -> Value {
        json!({
            "tick": 7,
            "players": [{"player": 42, "name": "ana", "gold": gold, "inventory": {"potion": 1}}],
            "npcs": [{"npc": 3, "hp": 10}],
            "items": items,
        })
    }

    fn trace(version: &str, digests: &[(u64, u32)]) -> ReplayTrace {
        ReplayTrace {
            version: version.into(),
            start_tick: 0,
            from_tick: digests.first().map_or(0, |d| d.0),
            to_tick: digests.last().map_or(0, |d| d.0),
            digests: digests.iter().map(|&(tick, digest)| TickDigest { tick, digest }).collect(),
            state: None,
        }
    }

    #[test]
    fn equal_states_have_one_digest() {
        let a = state(10, json!([]));
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_ne!(digest(&a), digest(&state(12, json!([]))));
    }

    #[test]
    fn equal_states_have_no_difference() {
        let a = state(10, json!([]));
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn a_difference_is_named_by_entity_and_field() {
        let found = diff(&state(10, json!([])), &state(12, json!([])));
        assert_eq!(
            found,
            vec![FieldDiff { field: "player 42 gold".into(), this_build: "10".into(), other_build: "12".into() }]
        );
    }

    #[test]
    fn an_entity_or_field_on_one_side_only_shows_as_absent() {
        let dropped = json!([{"item": 9, "kind": "gem", "amount": 1}]);
        let found = diff(&state(10, json!([])), &state(10, dropped));
        let fields: Vec<_> = found.iter().map(|d| (d.field.as_str(), d.this_build.as_str())).collect();
        assert_eq!(fields, vec![("item 9 amount", "absent"), ("item 9 kind", "absent")]);
        let mut newer = state(10, json!([]));
        newer["players"][0]["title"] = json!("knight");
        let found = diff(&state(10, json!([])), &newer);
        assert_eq!((found[0].field.as_str(), found[0].other_build.as_str()), ("player 42 title", "knight"));
        let mut more = state(10, json!([]));
        more["players"][0]["inventory"]["potion"] = json!(2);
        assert_eq!(diff(&state(10, json!([])), &more)[0].field, "player 42 inventory potion");
    }

    #[test]
    fn the_first_divergent_tick_is_the_first_digest_that_differs_or_is_missing() {
        let this = trace("1", &[(5, 1), (6, 2), (7, 3)]);
        assert_eq!(ReplayWindow::first_divergence(&this, &trace("2", &[(5, 1), (6, 2), (7, 3)])), (3, None));
        assert_eq!(ReplayWindow::first_divergence(&this, &trace("2", &[(5, 1), (6, 9), (7, 3)])), (1, Some(6)));
        assert_eq!(ReplayWindow::first_divergence(&this, &trace("2", &[(5, 1), (6, 2)])), (2, Some(7)));
        assert_eq!(ReplayWindow::first_divergence(&this, &trace("2", &[(5, 1), (6, 2), (7, 3), (8, 4)])), (3, Some(8)));
    }

    #[test]
    fn a_report_names_the_tick_and_each_field() {
        let (this, other) = (trace("1.0", &[(5, 1), (6, 2)]), trace("1.1", &[(5, 1), (6, 3)]));
        let (mine, theirs) = (state(10, json!([])), state(12, json!([])));
        let found = Divergence::new("meadow", &this, &other, Some((&mine, &theirs)));
        assert_eq!((found.first_divergent_tick, found.ticks_compared, found.fields_differing), (Some(6), 1, 1));
        assert_eq!(found.lines()[1], "  tick 6: player 42 gold 10 vs 12");
        let agreed = Divergence::new("meadow", &this, &this.clone(), None);
        assert!(agreed.lines()[0].contains("agree on every tick from 5 to 6"), "{:?}", agreed.lines());
    }
}
