//! A zone's state as plain data: every player, NPC and item on the ground,
//! as `respawn replay --player` prints it; and [`trace`], a build's replay
//! of a window as the digest of that state after every tick
//! (`respawn_api::replay`'s contract), which `respawn replay --trace` and
//! the zone server's `GET /admin/zones/{zone}/replay` answer and two builds
//! compare; and [`film`], a window's positions and events tick by tick, for
//! the dashboard's time machine. Plain data rather than snapshot bytes because two builds may
//! encode snapshots differently while agreeing on the state, and a
//! difference is read as "player 42 gold".

use std::collections::BTreeMap;

use respawn_api::replay::{digest, Dot, Film, Frame, ReplayTrace, ReplayedEvent, TickDigest, MOST_FILM_DOTS};
use respawn_sim::zone::TickOutput;
use respawn_sim::Zone;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::replay::{self, History, ReplayError};

/// A player's state after a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayerState {
    pub player: u64,
    pub name: String,
    pub entity: u32,
    pub x: i32,
    pub y: i32,
    pub hp: i32,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    pub inventory: BTreeMap<String, u32>,
    pub alive: bool,
}

impl PlayerState {
    pub fn of(zone: &Zone, id: u64) -> Option<Self> {
        let p = zone.player(id)?;
        Some(Self {
            player: id,
            name: p.name.clone(),
            entity: p.entity,
            x: p.pos.x,
            y: p.pos.y,
            hp: p.hp,
            level: p.level,
            xp: p.xp,
            gold: p.gold,
            inventory: p.inventory.iter().map(|(kind, n)| (kind.as_str().to_owned(), *n)).collect(),
            alive: p.is_alive(),
        })
    }
}

/// An NPC's state after a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NpcState {
    /// Its entity id.
    pub npc: u32,
    pub x: i32,
    pub y: i32,
    pub hp: i32,
    pub alive: bool,
}

/// An item lying in the zone after a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// Its entity id.
    pub item: u32,
    pub kind: String,
    pub amount: u32,
    pub x: i32,
    pub y: i32,
}

/// Everything in a zone after a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneState {
    pub tick: u64,
    pub players: Vec<PlayerState>,
    pub npcs: Vec<NpcState>,
    pub items: Vec<ItemState>,
}

impl ZoneState {
    pub fn of(zone: &Zone) -> Self {
        Self {
            tick: zone.tick_number(),
            players: zone.players().keys().filter_map(|id| PlayerState::of(zone, *id)).collect(),
            npcs: zone
                .npcs()
                .values()
                .map(|n| NpcState { npc: n.entity, x: n.pos.x, y: n.pos.y, hp: n.hp, alive: n.respawn_at.is_none() })
                .collect(),
            items: zone
                .items()
                .values()
                .map(|i| ItemState {
                    item: i.entity,
                    kind: i.kind.as_str().to_owned(),
                    amount: i.amount,
                    x: i.pos.x,
                    y: i.pos.y,
                })
                .collect(),
        }
    }

    /// The state as JSON: what is digested, and compared with another build's.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `history` replayed, the digest of the state after each tick of its
/// window, and with `state_at` the whole state at that tick (the replay
/// stops there).
pub fn trace(
    mut history: History,
    tick_hz: u32,
    version: &str,
    state_at: Option<u64>,
) -> Result<ReplayTrace, ReplayError> {
    if let Some(tick) = state_at {
        if !(history.from..=history.to).contains(&tick) {
            return Err(ReplayError::Outside { point: format!("tick {tick}"), first: history.from, last: history.to });
        }
        history.to = tick;
    }
    let (start_tick, from_tick, to_tick) = (history.start.tick_number(), history.from, history.to);
    let (mut digests, mut state) = (Vec::new(), None);
    replay::run(history, tick_hz, |zone, out| {
        let now = ZoneState::of(zone).to_json();
        digests.push(TickDigest { tick: out.tick, digest: digest(&now) });
        if state_at == Some(out.tick) {
            state = Some(now);
        }
    })?;
    Ok(ReplayTrace { version: version.to_owned(), start_tick, from_tick, to_tick, digests, state })
}

/// What a tick produced, as events the event search shows.
pub fn events_of(out: &TickOutput) -> Vec<ReplayedEvent> {
    out.events
        .iter()
        .map(|e| {
            let proto = crate::events::to_proto(e);
            ReplayedEvent {
                id: proto.id(),
                player: proto.player,
                kind: proto.kind.as_ref().map_or("unknown", |k| k.name()).to_owned(),
                detail: proto.kind.map_or_else(String::new, |k| format!("{k:?}")),
            }
        })
        .collect()
}

/// `history` replayed, where everything was after each tick of its window
/// and what happened in it (dead NPCs are off the map). `zone` names the
/// zone and gives its size.
pub fn film(
    history: History,
    zone: &respawn_sim::ZoneConfig,
    tick_hz: u32,
    version: &str,
) -> Result<Film, ReplayError> {
    film_within(history, zone, tick_hz, version, MOST_FILM_DOTS)
}

/// [`film`], refused once it would hold more than `most` positions.
fn film_within(
    history: History,
    zone: &respawn_sim::ZoneConfig,
    tick_hz: u32,
    version: &str,
    most: usize,
) -> Result<Film, ReplayError> {
    let (from, to) = (history.from, history.to);
    let (mut frames, mut dots, mut too_large) = (Vec::new(), 0, None);
    replay::run(history, tick_hz, |zone, out| {
        let frame = Frame {
            tick: out.tick,
            players: zone.players().iter().map(|(id, p)| Dot { id: *id, x: p.pos.x, y: p.pos.y }).collect(),
            npcs: zone.npcs().values().filter(|n| n.respawn_at.is_none()).map(|n| dot(n.entity, n.pos)).collect(),
            items: zone.items().values().map(|i| dot(i.entity, i.pos)).collect(),
            events: events_of(out),
        };
        let entities = frame.players.len() + frame.npcs.len() + frame.items.len();
        dots += entities;
        if dots > most && too_large.is_none() {
            let fits = most / entities.max(1);
            too_large = Some(ReplayError::FilmTooLarge { from, to, entities, most, fits });
        }
        if too_large.is_none() {
            frames.push(frame);
        }
    })?;
    if let Some(error) = too_large {
        return Err(error);
    }
    Ok(Film {
        zone: zone.name.clone(),
        zone_id: zone.zone_id,
        width: zone.width,
        height: zone.height,
        tick_hz,
        version: version.to_owned(),
        frames,
    })
}

fn dot(entity: u32, pos: respawn_sim::Point) -> Dot {
    Dot { id: u64::from(entity), x: pos.x, y: pos.y }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_state_round_trips_through_json() {
        let mut zone = Zone::new(respawn_sim::ZoneConfig::standard(3, "inspected", 7)).expect("zone");
        let join = respawn_sim::Command { player: 1, seq: 1, kind: respawn_sim::CommandKind::join_fresh("ana") };
        zone.tick(&[join]);
        let state = ZoneState::of(&zone);
        assert_eq!(state.players.len(), 1);
        let back: ZoneState = serde_json::from_value(state.to_json()).expect("json");
        assert_eq!(back, state);
    }

    #[test]
    fn a_film_has_every_tick_of_its_window_with_the_positions_and_events_of_each() {
        let config = respawn_sim::ZoneConfig::standard(3, "filmed", 7);
        let mut zone = Zone::new(config.clone()).expect("zone");
        zone.tick(&[]);
        let start = zone.clone();
        let join = respawn_sim::Command { player: 1, seq: 1, kind: respawn_sim::CommandKind::join_fresh("ana") };
        let batches = [vec![join], vec![], vec![], vec![]];
        let entries = (2..)
            .zip(&batches)
            .map(|(tick, batch)| respawn_store::JournalEntry { tick, batch: respawn_sim::command::encode_batch(batch) })
            .collect();
        let segment = respawn_store::history::HistorySegment {
            epoch: zone.epoch(),
            first_at_ms: 1,
            last_at_ms: 2,
            entries,
            hashes: Vec::new(),
        };
        let history = || History { zone_id: 3, start: start.clone(), segments: vec![segment.clone()], from: 2, to: 4 };

        let film = film(history(), &config, 20, "test").expect("film");
        assert_eq!((film.zone.as_str(), film.zone_id, film.width, film.tick_hz), ("filmed", 3, config.width, 20));
        assert_eq!(film.frames.iter().map(|f| f.tick).collect::<Vec<_>>(), [2, 3, 4], "the window, not tick 5");
        // Ana joins at tick 2: her join is an event of that tick, and she is on the map from it on.
        assert!(film.frames[0].events.iter().any(|e| e.player == 1), "{:?}", film.frames[0].events);
        assert!(film.frames.iter().all(|f| f.players.iter().any(|p| p.id == 1)));
        assert_eq!(film.frames[0].npcs.len(), config.npc_count as usize, "every NPC alive at first");

        // More positions than a film holds: refused, saying how many ticks fit.
        let per_tick = film.frames[0].players.len() + film.frames[0].npcs.len() + film.frames[0].items.len();
        let refused = film_within(history(), &config, 20, "test", per_tick * 2).expect_err("three ticks do not fit");
        assert!(matches!(refused, ReplayError::FilmTooLarge { fits: 2, .. }), "{refused}");
        assert!(refused.to_string().contains("ask for 2 ticks at most"), "{refused}");
    }
}
