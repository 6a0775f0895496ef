//! What players ask the zone to do, and why the zone may say no.

use std::collections::BTreeMap;

use crate::character::Character;
use crate::codec::DecodeError;
use crate::codec::{Reader, Writer};
use crate::geom::Point;
use crate::ids::{EntityId, ItemKind, PlayerId};

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
    /// Enter the zone under a display name, with the character the
    /// platform kept (or a fresh one).
    Join {
        name: String,
        character: Character,
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
    /// The player took its character back on a new connection. Server-made,
    /// like the two below: recorded in the tick so that replaying it
    /// reproduces the event.
    Resume,
    /// The zone began ticking in a new process (player 0).
    ZoneStarted,
    /// The zone is about to stop (player 0).
    ZoneStopped,
}

impl CommandKind {
    /// A join with a fresh character no platform keeps.
    pub fn join_fresh(name: impl Into<String>) -> Self {
        CommandKind::Join { name: name.into(), character: Character::default() }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            CommandKind::Join { .. } => "join",
            CommandKind::Leave => "leave",
            CommandKind::Move { .. } => "move",
            CommandKind::Attack { .. } => "attack",
            CommandKind::Pickup { .. } => "pickup",
            CommandKind::Resume => "resume",
            CommandKind::ZoneStarted => "zone_started",
            CommandKind::ZoneStopped => "zone_stopped",
        }
    }
}

/// Why a command was not applied. `as_str` is the wire text and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    NotInZone,
    AlreadyJoined,
    InvalidName,
    /// A join with a character whose stay in this zone already ended (an
    /// old ticket played again): the platform has, or soon will have, newer.
    StaleCharacter,
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
    pub const ALL: [RejectReason; 13] = [
        RejectReason::NotInZone,
        RejectReason::AlreadyJoined,
        RejectReason::InvalidName,
        RejectReason::StaleCharacter,
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
            RejectReason::StaleCharacter => "stale_character",
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

/// Encodes one tick's command batch for the journal (little-endian, in order).
pub fn encode_batch(commands: &[Command]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(commands.len() as u32);
    for c in commands {
        w.u64(c.player);
        w.u32(c.seq);
        match &c.kind {
            CommandKind::Join { name, character } => {
                w.u8(9);
                w.str(name);
                write_character(&mut w, character);
            }
            CommandKind::Leave => w.u8(2),
            CommandKind::Move { velocity } => {
                w.u8(3);
                w.i32(velocity.x);
                w.i32(velocity.y);
            }
            CommandKind::Attack { target } => {
                w.u8(4);
                w.u32(*target);
            }
            CommandKind::Pickup { item } => {
                w.u8(5);
                w.u32(*item);
            }
            CommandKind::Resume => w.u8(6),
            CommandKind::ZoneStarted => w.u8(7),
            CommandKind::ZoneStopped => w.u8(8),
        }
    }
    w.buf
}

fn write_character(w: &mut Writer, c: &Character) {
    w.u64(c.incarnation);
    w.u32(c.level);
    w.u64(c.xp);
    w.u64(c.gold);
    w.u32(c.inventory.len() as u32);
    for (kind, count) in &c.inventory {
        w.u8(kind.code());
        w.u32(*count);
    }
    match &c.place {
        None => w.u8(0),
        Some((zone, pos)) => {
            w.u8(1);
            w.str(zone);
            w.i32(pos.x);
            w.i32(pos.y);
        }
    }
}

fn read_character(r: &mut Reader<'_>) -> Result<Character, DecodeError> {
    let incarnation = r.u64("character incarnation")?;
    let level = r.u32("character level")?;
    let xp = r.u64("character xp")?;
    let gold = r.u64("character gold")?;
    let mut inventory = BTreeMap::new();
    for _ in 0..r.count(5, "character inventory")? {
        let code = r.u8("item kind")?;
        let kind =
            ItemKind::from_code(code).ok_or_else(|| DecodeError::Invalid(format!("unknown item kind {code}")))?;
        inventory.insert(kind, r.u32("item count")?);
    }
    let place = match r.u8("character place")? {
        0 => None,
        1 => Some((r.str("place zone")?, Point::new(r.i32("place x")?, r.i32("place y")?))),
        other => return Err(DecodeError::Invalid(format!("character place tag {other}"))),
    };
    Ok(Character { incarnation, level, xp, gold, inventory, place })
}

/// Decodes a batch written by [`encode_batch`]; never panics on bad bytes.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Command>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.count(13, "batch length")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let player = r.u64("command player")?;
        let seq = r.u32("command seq")?;
        let kind = match r.u8("command kind")? {
            // Written by builds before characters were kept.
            1 => CommandKind::Join { name: r.str("join name")?, character: Character::default() },
            9 => CommandKind::Join { name: r.str("join name")?, character: read_character(&mut r)? },
            2 => CommandKind::Leave,
            3 => CommandKind::Move { velocity: Point::new(r.i32("move x")?, r.i32("move y")?) },
            4 => CommandKind::Attack { target: r.u32("attack target")? },
            5 => CommandKind::Pickup { item: r.u32("pickup item")? },
            6 => CommandKind::Resume,
            7 => CommandKind::ZoneStarted,
            8 => CommandKind::ZoneStopped,
            other => return Err(DecodeError::Invalid(format!("unknown command kind {other}"))),
        };
        out.push(Command { player, seq, kind });
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid(format!("{} trailing bytes after the batch", r.remaining())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_garbage() {
        let batch = vec![
            Command {
                player: 1,
                seq: 0,
                kind: CommandKind::Join { name: "ann".into(), character: Character::default() },
            },
            Command {
                player: 3,
                seq: 0,
                kind: CommandKind::Join {
                    name: "bo".into(),
                    character: Character {
                        incarnation: 4,
                        level: 3,
                        xp: 310,
                        gold: 12,
                        inventory: BTreeMap::from([(ItemKind::Gem, 2), (ItemKind::Potion, 1)]),
                        place: Some(("caverns".into(), Point::new(100, -5))),
                    },
                },
            },
            Command { player: 1, seq: 7, kind: CommandKind::Move { velocity: Point::new(-3, 30) } },
            Command { player: 2, seq: 8, kind: CommandKind::Attack { target: 99 } },
            Command { player: 2, seq: 9, kind: CommandKind::Pickup { item: 5 } },
            Command { player: 1, seq: 10, kind: CommandKind::Leave },
            Command { player: 1, seq: 0, kind: CommandKind::Resume },
            Command { player: 0, seq: 0, kind: CommandKind::ZoneStarted },
            Command { player: 0, seq: 0, kind: CommandKind::ZoneStopped },
        ];
        let bytes = encode_batch(&batch);
        assert_eq!(decode_batch(&bytes), Ok(batch));
        assert_eq!(decode_batch(&encode_batch(&[])), Ok(vec![]));
        for len in 0..bytes.len() {
            assert!(decode_batch(&bytes[..len]).is_err(), "truncated at {len}");
        }
        assert!(decode_batch(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
    }
}
