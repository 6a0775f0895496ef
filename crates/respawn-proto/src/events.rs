//! Domain events as published to Kafka: the messages of `proto/events.proto`.
//! `tests/schema.rs` checks them against the `.proto` file.

use prost::Message;

/// The event schema version this build writes.
pub const EVENT_SCHEMA_VERSION: u32 = 1;
/// The Kafka topic of player events.
pub const TOPIC: &str = "game.events.player";

#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(uint32, tag = "1")]
    pub schema_version: u32,
    #[prost(uint32, tag = "2")]
    pub zone: u32,
    #[prost(uint64, tag = "3")]
    pub tick: u64,
    #[prost(uint32, tag = "4")]
    pub index: u32,
    #[prost(uint64, tag = "5")]
    pub player: u64,
    #[prost(uint64, tag = "6")]
    pub epoch: u64,
    #[prost(uint64, tag = "7")]
    pub incarnation: u64,
    #[prost(oneof = "event::Kind", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22")]
    pub kind: Option<event::Kind>,
}

pub mod event {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "10")]
        PlayerJoined(super::PlayerJoined),
        #[prost(message, tag = "11")]
        PlayerLeft(super::PlayerLeft),
        #[prost(message, tag = "12")]
        ItemAcquired(super::ItemAcquired),
        #[prost(message, tag = "13")]
        GoldChanged(super::GoldChanged),
        #[prost(message, tag = "14")]
        LevelUp(super::LevelUp),
        #[prost(message, tag = "15")]
        PlayerKilled(super::PlayerKilled),
        #[prost(message, tag = "16")]
        NpcKilled(super::NpcKilled),
        #[prost(message, tag = "17")]
        PlayerRespawned(super::PlayerRespawned),
        #[prost(message, tag = "18")]
        CheatRejected(super::CheatRejected),
        #[prost(message, tag = "19")]
        XpGained(super::XpGained),
        #[prost(message, tag = "20")]
        SessionResumed(super::SessionResumed),
        #[prost(message, tag = "21")]
        ZoneStarted(super::ZoneStarted),
        #[prost(message, tag = "22")]
        ZoneStopped(super::ZoneStopped),
    }

    impl Kind {
        /// Stable name used in the event store and metric labels.
        pub fn name(&self) -> &'static str {
            match self {
                Kind::PlayerJoined(_) => "player_joined",
                Kind::PlayerLeft(_) => "player_left",
                Kind::ItemAcquired(_) => "item_acquired",
                Kind::GoldChanged(_) => "gold_changed",
                Kind::LevelUp(_) => "level_up",
                Kind::PlayerKilled(_) => "player_killed",
                Kind::NpcKilled(_) => "npc_killed",
                Kind::PlayerRespawned(_) => "player_respawned",
                Kind::CheatRejected(_) => "cheat_rejected",
                Kind::XpGained(_) => "xp_gained",
                Kind::SessionResumed(_) => "session_resumed",
                Kind::ZoneStarted(_) => "zone_started",
                Kind::ZoneStopped(_) => "zone_stopped",
            }
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct PlayerJoined {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub entity: u32,
    #[prost(message, optional, tag = "3")]
    pub character: Option<Character>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PlayerLeft {
    #[prost(uint32, tag = "1")]
    pub level: u32,
    #[prost(uint64, tag = "2")]
    pub xp: u64,
    #[prost(uint64, tag = "3")]
    pub gold: u64,
    #[prost(message, optional, tag = "4")]
    pub character: Option<Character>,
    /// The zone it walked to through an exit (empty: it just left).
    #[prost(string, tag = "5")]
    pub travel: String,
}

/// A character's durable part.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Character {
    #[prost(uint64, tag = "1")]
    pub incarnation: u64,
    #[prost(uint32, tag = "2")]
    pub level: u32,
    #[prost(uint64, tag = "3")]
    pub xp: u64,
    #[prost(uint64, tag = "4")]
    pub gold: u64,
    #[prost(message, repeated, tag = "5")]
    pub inventory: Vec<ItemStack>,
    /// The zone's name (empty: nowhere).
    #[prost(string, tag = "6")]
    pub zone: String,
    #[prost(sint32, tag = "7")]
    pub x: i32,
    #[prost(sint32, tag = "8")]
    pub y: i32,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct ItemStack {
    #[prost(uint32, tag = "1")]
    pub item: u32,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemAcquired {
    #[prost(uint32, tag = "1")]
    pub item: u32,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct GoldChanged {
    #[prost(sint64, tag = "1")]
    pub delta: i64,
    #[prost(uint64, tag = "2")]
    pub total: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct LevelUp {
    #[prost(uint32, tag = "1")]
    pub level: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PlayerKilled {
    #[prost(uint64, tag = "1")]
    pub killer_player: u64,
    #[prost(uint32, tag = "2")]
    pub killer_npc: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct NpcKilled {
    #[prost(uint32, tag = "1")]
    pub npc: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PlayerRespawned {}

#[derive(Clone, PartialEq, Message)]
pub struct CheatRejected {
    #[prost(string, tag = "1")]
    pub reason: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct XpGained {
    #[prost(uint64, tag = "1")]
    pub amount: u64,
    #[prost(uint64, tag = "2")]
    pub total: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionResumed {}

#[derive(Clone, PartialEq, Message)]
pub struct ZoneStarted {}

#[derive(Clone, PartialEq, Message)]
pub struct ZoneStopped {}

/// Why bytes are not an event this build can read.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("malformed event: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("event schema version {0} is not supported (this build reads {EVENT_SCHEMA_VERSION})")]
    UnsupportedVersion(u32),
    #[error("event {0} has no known kind")]
    UnknownKind(String),
}

/// `zone-epoch-tick-index`: an event's unique id, wherever it is shown
/// (the event search, a replay, the time machine).
pub fn event_id(zone: u32, epoch: u64, tick: u64, index: u32) -> String {
    format!("{zone}-{epoch}-{tick}-{index}")
}

impl Event {
    /// `zone-epoch-tick-index`, the event's unique id.
    pub fn id(&self) -> String {
        event_id(self.zone, self.epoch, self.tick, self.index)
    }

    pub fn decode_checked(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let event = Event::decode(bytes)?;
        if event.schema_version != EVENT_SCHEMA_VERSION {
            return Err(EventDecodeError::UnsupportedVersion(event.schema_version));
        }
        if event.kind.is_none() {
            return Err(EventDecodeError::UnknownKind(event.id()));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_bad_ones_are_refused() {
        let e = Event {
            schema_version: EVENT_SCHEMA_VERSION,
            zone: 1,
            tick: 2,
            index: 3,
            player: 4,
            epoch: 9,
            incarnation: 2,
            kind: Some(event::Kind::GoldChanged(GoldChanged { delta: -5, total: 10 })),
        };
        let bytes = e.encode_to_vec();
        assert_eq!(Event::decode_checked(&bytes).expect("decodes"), e);
        assert_eq!(e.id(), "1-9-2-3");
        let future = Event { schema_version: 9, ..e.clone() }.encode_to_vec();
        assert!(matches!(Event::decode_checked(&future), Err(EventDecodeError::UnsupportedVersion(9))));
        let empty = Event { kind: None, ..e }.encode_to_vec();
        assert!(matches!(Event::decode_checked(&empty), Err(EventDecodeError::UnknownKind(_))));
        assert!(Event::decode_checked(&[0xff, 0xff]).is_err());
    }
}
