//! Respawn's client protocol: the messages of `proto/respawn.proto` as Rust
//! types, the protocol version, frame limits and WebSocket close codes.
//!
//! The structs are written by hand with `prost` derives (no build script, no
//! `protoc`); `tests/schema.rs` checks them against the `.proto` files.
//! [`events`] holds the domain-event schema (`proto/events.proto`).

use bytes::Bytes;
use prost::Message;

pub mod events;

/// The newest protocol version this build speaks (version 2 packs moves:
/// `StateUpdate.moved_ids` and `moved_steps`).
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest version it still serves, so that clients of the previous build
/// keep playing through a rolling update; a `Join` outside is refused.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;
/// Largest client frame the server reads; bigger ones close the connection.
pub const MAX_CLIENT_FRAME_BYTES: usize = 4 * 1024;

#[derive(Clone, PartialEq, Message)]
pub struct ClientMessage {
    #[prost(oneof = "client_message::Body", tags = "1, 2, 3, 4, 5, 6")]
    pub body: Option<client_message::Body>,
}

pub mod client_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Join(super::Join),
        #[prost(message, tag = "2")]
        Move(super::MoveInput),
        #[prost(message, tag = "3")]
        Attack(super::Attack),
        #[prost(message, tag = "4")]
        Pickup(super::Pickup),
        #[prost(message, tag = "5")]
        Ping(super::Ping),
        #[prost(message, tag = "6")]
        Leave(super::Leave),
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Join {
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    #[prost(string, tag = "2")]
    pub token: String,
    #[prost(string, tag = "3")]
    pub zone: String,
    #[prost(string, tag = "4")]
    pub resume_token: String,
    /// The character ticket of the platform's play grant: what a zone
    /// server with a platform requires to let a character in.
    #[prost(string, tag = "5")]
    pub character_ticket: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct MoveInput {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(sint32, tag = "2")]
    pub vx: i32,
    #[prost(sint32, tag = "3")]
    pub vy: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Attack {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(uint32, tag = "2")]
    pub target: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Pickup {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(uint32, tag = "2")]
    pub item: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Ping {
    #[prost(uint64, tag = "1")]
    pub client_time: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Leave {}

#[derive(Clone, PartialEq, Message)]
pub struct ServerMessage {
    #[prost(oneof = "server_message::Body", tags = "1, 2, 3, 4, 5, 6")]
    pub body: Option<server_message::Body>,
}

pub mod server_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Welcome(super::Welcome),
        #[prost(message, tag = "2")]
        Update(super::StateUpdate),
        #[prost(message, tag = "3")]
        Pong(super::Pong),
        #[prost(message, tag = "4")]
        Notice(super::Notice),
        #[prost(message, tag = "5")]
        Rejected(super::CommandRejected),
        #[prost(message, tag = "6")]
        Error(super::Error),
    }
}

/// An area that leads to another zone.
#[derive(Clone, PartialEq, Message)]
pub struct Exit {
    #[prost(message, optional, tag = "1")]
    pub area: Option<Rect>,
    #[prost(string, tag = "2")]
    pub to: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Rect {
    #[prost(sint32, tag = "1")]
    pub x: i32,
    #[prost(sint32, tag = "2")]
    pub y: i32,
    #[prost(sint32, tag = "3")]
    pub w: i32,
    #[prost(sint32, tag = "4")]
    pub h: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Welcome {
    #[prost(uint32, tag = "1")]
    pub protocol_version: u32,
    #[prost(string, tag = "2")]
    pub zone: String,
    #[prost(uint32, tag = "3")]
    pub entity_id: u32,
    #[prost(uint32, tag = "4")]
    pub tick_rate_hz: u32,
    #[prost(sint32, tag = "5")]
    pub width: i32,
    #[prost(sint32, tag = "6")]
    pub height: i32,
    #[prost(message, repeated, tag = "7")]
    pub obstacles: Vec<Rect>,
    #[prost(uint64, tag = "8")]
    pub tick: u64,
    #[prost(string, tag = "9")]
    pub server_version: String,
    #[prost(uint32, tag = "10")]
    pub view_radius: u32,
    #[prost(uint32, tag = "11")]
    pub max_speed: u32,
    #[prost(uint32, tag = "12")]
    pub attack_range: u32,
    #[prost(uint32, tag = "13")]
    pub pickup_range: u32,
    #[prost(string, tag = "14")]
    pub resume_token: String,
    #[prost(bool, tag = "15")]
    pub resumed: bool,
    #[prost(uint64, tag = "16")]
    pub timeline: u64,
    #[prost(uint64, tag = "17")]
    pub timeline_start_tick: u64,
    #[prost(message, repeated, tag = "18")]
    pub exits: Vec<Exit>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntityKind {
    Unspecified = 0,
    Player = 1,
    Npc = 2,
    Item = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ItemKind {
    Unspecified = 0,
    Gold = 1,
    Potion = 2,
    Gem = 3,
    Scroll = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct EntityState {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(enumeration = "EntityKind", tag = "2")]
    pub kind: i32,
    #[prost(sint32, tag = "3")]
    pub x: i32,
    #[prost(sint32, tag = "4")]
    pub y: i32,
    #[prost(int32, tag = "5")]
    pub hp: i32,
    #[prost(int32, tag = "6")]
    pub max_hp: i32,
    #[prost(uint32, tag = "7")]
    pub level: u32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(enumeration = "ItemKind", tag = "9")]
    pub item: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct InventorySlot {
    #[prost(enumeration = "ItemKind", tag = "1")]
    pub item: i32,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PlayerStats {
    #[prost(int32, tag = "1")]
    pub hp: i32,
    #[prost(int32, tag = "2")]
    pub max_hp: i32,
    #[prost(uint32, tag = "3")]
    pub level: u32,
    #[prost(uint64, tag = "4")]
    pub xp: u64,
    #[prost(uint64, tag = "5")]
    pub gold: u64,
    #[prost(message, repeated, tag = "6")]
    pub inventory: Vec<InventorySlot>,
    #[prost(bool, tag = "7")]
    pub dead: bool,
    #[prost(uint64, tag = "8")]
    pub respawn_tick: u64,
    #[prost(uint64, tag = "9")]
    pub next_level_xp: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StateUpdate {
    #[prost(uint64, tag = "1")]
    pub tick: u64,
    #[prost(message, repeated, tag = "2")]
    pub entered: Vec<EntityState>,
    #[prost(message, repeated, tag = "3")]
    pub changed: Vec<EntityState>,
    #[prost(uint32, repeated, tag = "4")]
    pub left: Vec<u32>,
    #[prost(message, optional, tag = "5")]
    pub you: Option<PlayerStats>,
    #[prost(uint32, tag = "6")]
    pub acked_seq: u32,
    #[prost(uint64, tag = "7")]
    pub durable_tick: u64,
    /// Protocol 2: ids of the entities that only moved, each as its
    /// difference from the one before; see [`StateUpdate::moves`].
    #[prost(uint32, repeated, tag = "8")]
    pub moved_ids: Vec<u32>,
    /// Protocol 2: dx, dy per moved id, since the position last sent.
    #[prost(sint32, repeated, tag = "9")]
    pub moved_steps: Vec<i32>,
}

/// One entity of [`StateUpdate::moves`]: its id and how far it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub id: u32,
    pub dx: i32,
    pub dy: i32,
}

/// An update whose moves cannot be read: a server bug or a corrupted frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMoves {
    #[error("moved_steps holds {steps} numbers for {ids} moved ids (two each are needed)")]
    StepCount { ids: usize, steps: usize },
    #[error("moved id overflows past {0}")]
    IdOverflow(u32),
}

impl StateUpdate {
    /// The moved entities with their ids decoded, or why the lists are malformed.
    pub fn moves(&self) -> Result<Vec<Move>, BadMoves> {
        let (ids, steps) = (self.moved_ids.len(), self.moved_steps.len());
        if steps != ids * 2 {
            return Err(BadMoves::StepCount { ids, steps });
        }
        let mut id = 0u32;
        self.moved_ids
            .iter()
            .zip(self.moved_steps.chunks_exact(2))
            .map(|(gap, step)| {
                id = id.checked_add(*gap).ok_or(BadMoves::IdOverflow(id))?;
                Ok(Move { id, dx: step[0], dy: step[1] })
            })
            .collect()
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Pong {
    #[prost(uint64, tag = "1")]
    pub client_time: u64,
    #[prost(uint64, tag = "2")]
    pub server_tick: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NoticeKind {
    Unspecified = 0,
    Kick = 1,
    Announcement = 2,
    Shutdown = 3,
    Migrate = 4,
    Travel = 5,
}

#[derive(Clone, PartialEq, Message)]
pub struct Notice {
    #[prost(enumeration = "NoticeKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(string, tag = "3")]
    pub migrate_to: String,
    #[prost(uint32, tag = "4")]
    pub deadline_ms: u32,
    #[prost(string, tag = "5")]
    pub travel_to: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommandRejected {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(string, tag = "2")]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    Malformed = 1,
    UnknownMessage = 2,
    JoinRequired = 3,
    AlreadyJoined = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct Error {
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Why a client frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("unknown message type (no known field set)")]
    UnknownMessage,
}

impl DecodeError {
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnknownMessage => "unknown_message",
        }
    }
}

/// Decodes one client frame into the message it carries.
pub fn decode_client(frame: &[u8]) -> Result<client_message::Body, DecodeError> {
    ClientMessage::decode(frame)?.body.ok_or(DecodeError::UnknownMessage)
}

/// Decodes one server frame (used by clients: bots, load generator, tests).
pub fn decode_server(frame: &[u8]) -> Result<server_message::Body, DecodeError> {
    ServerMessage::decode(frame)?.body.ok_or(DecodeError::UnknownMessage)
}

pub fn encode_client(body: client_message::Body) -> Bytes {
    Bytes::from(ClientMessage { body: Some(body) }.encode_to_vec())
}

pub fn encode_server(body: server_message::Body) -> Bytes {
    Bytes::from(ServerMessage { body: Some(body) }.encode_to_vec())
}

/// WebSocket close codes the zone server uses. `as_str` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    Normal,
    /// Server shutting down or draining past its deadline.
    GoingAway,
    /// A text frame: the protocol is binary.
    UnsupportedData,
    /// A frame that does not decode.
    InvalidPayload,
    /// Command flood.
    PolicyViolation,
    /// A frame over [`MAX_CLIENT_FRAME_BYTES`].
    TooBig,
    UnsupportedProtocolVersion,
    JoinTimeout,
    InvalidToken,
    UnknownZone,
    Draining,
    Kicked,
    /// The client could not keep up with updates.
    TooSlow,
    /// The same player joined again on another connection.
    Replaced,
    ZoneFull,
    UnknownMessage,
    JoinRequired,
    /// The player is banned.
    Banned,
    /// The zone moved to another server: reconnect there (the notice before
    /// the close names it) with the resume token.
    Migrated,
    /// The character's last stay in this zone is still being saved, or
    /// its ticket is not good: ask the platform to play again.
    CharacterUnavailable,
    /// The character walked into an exit: ask the platform to play in the
    /// zone the TRAVEL notice names.
    Travelled,
}

impl CloseCode {
    pub const ALL: [CloseCode; 21] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::TooBig,
        CloseCode::UnsupportedProtocolVersion,
        CloseCode::JoinTimeout,
        CloseCode::InvalidToken,
        CloseCode::UnknownZone,
        CloseCode::Draining,
        CloseCode::Kicked,
        CloseCode::TooSlow,
        CloseCode::Replaced,
        CloseCode::ZoneFull,
        CloseCode::UnknownMessage,
        CloseCode::JoinRequired,
        CloseCode::Banned,
        CloseCode::Migrated,
        CloseCode::CharacterUnavailable,
        CloseCode::Travelled,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::UnsupportedData => 1003,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::UnsupportedProtocolVersion => 4001,
            CloseCode::JoinTimeout => 4002,
            CloseCode::InvalidToken => 4003,
            CloseCode::UnknownZone => 4004,
            CloseCode::Draining => 4005,
            CloseCode::Kicked => 4006,
            CloseCode::TooSlow => 4007,
            CloseCode::Replaced => 4008,
            CloseCode::ZoneFull => 4009,
            CloseCode::UnknownMessage => 4010,
            CloseCode::JoinRequired => 4011,
            CloseCode::Banned => 4012,
            CloseCode::Migrated => 4013,
            CloseCode::CharacterUnavailable => 4014,
            CloseCode::Travelled => 4015,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::UnsupportedData => "text_frame",
            CloseCode::InvalidPayload => "malformed",
            CloseCode::PolicyViolation => "command_flood",
            CloseCode::TooBig => "oversized",
            CloseCode::UnsupportedProtocolVersion => "protocol_version",
            CloseCode::JoinTimeout => "join_timeout",
            CloseCode::InvalidToken => "invalid_token",
            CloseCode::UnknownZone => "unknown_zone",
            CloseCode::Draining => "draining",
            CloseCode::Kicked => "kicked",
            CloseCode::TooSlow => "too_slow",
            CloseCode::Replaced => "replaced",
            CloseCode::ZoneFull => "zone_full",
            CloseCode::UnknownMessage => "unknown_message",
            CloseCode::JoinRequired => "join_required",
            CloseCode::Banned => "banned",
            CloseCode::Migrated => "migrated",
            CloseCode::CharacterUnavailable => "character_unavailable",
            CloseCode::Travelled => "travelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip() {
        let join = client_message::Body::Join(Join {
            protocol_version: 1,
            token: "t".into(),
            zone: "meadow".into(),
            ..Default::default()
        });
        let bytes = encode_client(join.clone());
        assert!(decode_client(&bytes).expect("decodes") == join);
    }

    #[test]
    fn moves_decode_gaps_into_ids_and_refuse_malformed_lists() {
        let update =
            |ids: Vec<u32>, steps: Vec<i32>| StateUpdate { moved_ids: ids, moved_steps: steps, ..Default::default() };
        let moves = update(vec![5, 2, 40], vec![1, -1, 0, 25, -25, 0]).moves().expect("well formed");
        let seen: Vec<(u32, i32, i32)> = moves.iter().map(|m| (m.id, m.dx, m.dy)).collect();
        assert_eq!(seen, vec![(5, 1, -1), (7, 0, 25), (47, -25, 0)]);
        assert_eq!(update(vec![], vec![]).moves(), Ok(vec![]));
        assert_eq!(update(vec![1, 2], vec![0, 0, 0]).moves(), Err(BadMoves::StepCount { ids: 2, steps: 3 }));
        assert_eq!(update(vec![u32::MAX, 1], vec![0; 4]).moves(), Err(BadMoves::IdOverflow(u32::MAX)));
    }

    #[test]
    fn garbage_and_empty_frames_are_refused() {
        assert!(matches!(decode_client(&[0xff, 0xff, 0xff]), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_client(&[]), Err(DecodeError::UnknownMessage)));
        // Field 15, varint 1: valid protobuf, but no message type we know.
        assert!(matches!(decode_client(&[0x78, 0x01]), Err(DecodeError::UnknownMessage)));
    }

    #[test]
    fn close_codes_are_unique_and_invertible() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
    }
}
