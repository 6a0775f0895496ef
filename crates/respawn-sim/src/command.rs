//! What players ask the zone to do, and why the zone may say no.

use crate::geom::Point;
use crate::zone::{EntityId, PlayerId};

/// One player's request, as accepted into a tick's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub player: PlayerId,
    /// The client's sequence number, echoed in a rejection (0 for server-made commands).
    pub seq: u32,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// Enter the zone under a display name.
    Join {
        name: String,
    },
    /// Leave the zone; the character is removed.
    Leave,
    /// Set the velocity (centimetres per tick) the player moves at from now on.
    Move {
        velocity: Point,
    },
    Attack {
        target: EntityId,
    },
    Pickup {
        item: EntityId,
    },
}

impl CommandKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CommandKind::Join { .. } => "join",
            CommandKind::Leave => "leave",
            CommandKind::Move { .. } => "move",
            CommandKind::Attack { .. } => "attack",
            CommandKind::Pickup { .. } => "pickup",
        }
    }
}

/// Why a command was not applied. `as_str` is the wire text and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    NotInZone,
    AlreadyJoined,
    InvalidName,
    /// Faster than the zone's speed limit: treated as a cheat attempt.
    TooFast,
    Dead,
    Cooldown,
    NoSuchTarget,
    InvalidTarget,
    TargetDead,
    OutOfRange,
    NoSuchItem,
    InventoryFull,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::NotInZone,
        RejectReason::AlreadyJoined,
        RejectReason::InvalidName,
        RejectReason::TooFast,
        RejectReason::Dead,
        RejectReason::Cooldown,
        RejectReason::NoSuchTarget,
        RejectReason::InvalidTarget,
        RejectReason::TargetDead,
        RejectReason::OutOfRange,
        RejectReason::NoSuchItem,
        RejectReason::InventoryFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotInZone => "not_in_zone",
            RejectReason::AlreadyJoined => "already_joined",
            RejectReason::InvalidName => "invalid_name",
            RejectReason::TooFast => "too_fast",
            RejectReason::Dead => "dead",
            RejectReason::Cooldown => "cooldown",
            RejectReason::NoSuchTarget => "no_such_target",
            RejectReason::InvalidTarget => "invalid_target",
            RejectReason::TargetDead => "target_dead",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::NoSuchItem => "no_such_item",
            RejectReason::InventoryFull => "inventory_full",
        }
    }

    /// Whether an honest client could not have sent this (a cheat signal).
    pub fn is_cheat(self) -> bool {
        matches!(self, RejectReason::TooFast)
    }
}
