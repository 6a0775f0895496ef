//! Domain events: the zone's record of what happened, with ids that a replay
//! reproduces exactly (zone, tick, index within the tick).

use crate::character::Character;
use crate::command::RejectReason;
use crate::ids::{EntityId, ItemKind, PlayerId};

/// Deterministic event id: re-simulating a tick yields the same ids, so a
/// store with a unique key on it absorbs every duplicate. The epoch names the
/// zone's timeline: a zone started afresh or rolled back to an older point
/// gets a new one, so its ticks never collide with another timeline's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    pub zone: u32,
    pub epoch: u64,
    pub tick: u64,
    pub index: u32,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}-{}", self.zone, self.epoch, self.tick, self.index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    pub id: EventId,
    /// The incarnation of the character the event is about (0 for none, or
    /// a character no platform keeps): what tells a stale writer's events
    /// from the current stay's.
    pub incarnation: u64,
    pub kind: EventKind,
}

/// Who dealt a killing blow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killer {
    Player(PlayerId),
    Npc(EntityId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// With the character as it came in.
    PlayerJoined {
        player: PlayerId,
        name: String,
        entity: EntityId,
        character: Character,
    },
    /// With the character as it leaves: what the platform keeps. `travel`:
    /// it walked into an exit to that zone (its place is the arrival there).
    PlayerLeft {
        player: PlayerId,
        character: Character,
        travel: Option<String>,
    },
    ItemAcquired {
        player: PlayerId,
        item: ItemKind,
        count: u32,
    },
    GoldChanged {
        player: PlayerId,
        delta: i64,
        total: u64,
    },
    LevelUp {
        player: PlayerId,
        level: u32,
    },
    PlayerKilled {
        victim: PlayerId,
        killer: Killer,
    },
    NpcKilled {
        npc: EntityId,
        killer: PlayerId,
    },
    PlayerRespawned {
        player: PlayerId,
    },
    CheatRejected {
        player: PlayerId,
        reason: RejectReason,
    },
    XpGained {
        player: PlayerId,
        amount: u64,
        total: u64,
    },
    SessionResumed {
        player: PlayerId,
    },
    ZoneStarted,
    ZoneStopped,
}

impl EventKind {
    /// The player the event is about, if any (for a kill, the victim; for
    /// an NPC's death, its killer).
    pub fn player(&self) -> Option<PlayerId> {
        match self {
            EventKind::PlayerJoined { player, .. }
            | EventKind::PlayerLeft { player, .. }
            | EventKind::ItemAcquired { player, .. }
            | EventKind::GoldChanged { player, .. }
            | EventKind::LevelUp { player, .. }
            | EventKind::PlayerRespawned { player }
            | EventKind::CheatRejected { player, .. }
            | EventKind::XpGained { player, .. }
            | EventKind::SessionResumed { player } => Some(*player),
            EventKind::PlayerKilled { victim, .. } => Some(*victim),
            EventKind::NpcKilled { killer, .. } => Some(*killer),
            EventKind::ZoneStarted | EventKind::ZoneStopped => None,
        }
    }

    /// Stable name used in schemas, topics and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::PlayerJoined { .. } => "player_joined",
            EventKind::PlayerLeft { .. } => "player_left",
            EventKind::ItemAcquired { .. } => "item_acquired",
            EventKind::GoldChanged { .. } => "gold_changed",
            EventKind::LevelUp { .. } => "level_up",
            EventKind::PlayerKilled { .. } => "player_killed",
            EventKind::NpcKilled { .. } => "npc_killed",
            EventKind::PlayerRespawned { .. } => "player_respawned",
            EventKind::CheatRejected { .. } => "cheat_rejected",
            EventKind::XpGained { .. } => "xp_gained",
            EventKind::SessionResumed { .. } => "session_resumed",
            EventKind::ZoneStarted => "zone_started",
            EventKind::ZoneStopped => "zone_stopped",
        }
    }
}
