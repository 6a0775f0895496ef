//! A zone's state as plain data: every player, NPC and item on the ground,
//! as `respawn replay --player` prints it; and [`trace`], a build's replay
//! of a window as the digest of that state after every tick
//! (`respawn_api::replay`'s contract), which `respawn replay --trace` and
//! the zone server's `GET /admin/zones/{zone}/replay` answer and two builds
//! compare. Plain data rather than snapshot bytes because two builds may
//! encode snapshots differently while agreeing on the state, and a
//! difference is read as "player 42 gold".

use std::collections::BTreeMap;

use respawn_api::replay::{digest, ReplayTrace, TickDigest};
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
}
