//! Conversions from simulation values to protocol messages, and encoding.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{self, WireType};
use respawn_proto::{self as proto, server_message::Body};
use respawn_sim::view::{Changed, Delta, EntityKind, EntityState, SelfStats};
use respawn_sim::zone::xp_for_level;
use respawn_sim::{ItemKind, Zone};

fn item_code(item: ItemKind) -> i32 {
    i32::from(item.code())
}

fn entered(zone: &Zone, e: &EntityState) -> proto::EntityState {
    let kind = match e.kind {
        EntityKind::Player => proto::EntityKind::Player,
        EntityKind::Npc => proto::EntityKind::Npc,
        EntityKind::Item => proto::EntityKind::Item,
    };
    let name = match e.kind {
        EntityKind::Player => zone.player_by_entity(e.id).map(|p| p.name.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    proto::EntityState {
        id: e.id,
        kind: kind as i32,
        x: e.pos.x,
        y: e.pos.y,
        hp: e.hp,
        max_hp: e.max_hp,
        level: e.level,
        name,
        item: e.item.map_or(0, item_code),
    }
}

/// Level and max HP only when they changed: 0 means "as before".
fn changed(c: &Changed) -> proto::EntityState {
    let e = &c.state;
    let (max_hp, level) = if c.stats() { (e.max_hp, e.level) } else { (0, 0) };
    proto::EntityState { id: e.id, x: e.pos.x, y: e.pos.y, hp: e.hp, max_hp, level, ..Default::default() }
}

pub fn stats(s: &SelfStats) -> proto::PlayerStats {
    proto::PlayerStats {
        hp: s.hp,
        max_hp: s.max_hp,
        level: s.level,
        xp: s.xp,
        gold: s.gold,
        inventory: s
            .inventory
            .iter()
            .map(|(item, count)| proto::InventorySlot { item: item_code(*item), count: *count })
            .collect(),
        dead: s.respawn_at.is_some(),
        respawn_tick: s.respawn_at.unwrap_or(0),
        next_level_xp: xp_for_level(s.level.saturating_add(1)),
    }
}

/// Commands confirmed durable: the client's highest seq, and the tick it is durable through.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub seq: u32,
    pub durable_tick: u64,
}

/// How a client is sent its updates, by the protocol version it joined with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFormat {
    /// Protocol 1: every changed entity whole, in `changed`.
    Whole,
    /// Protocol 2: entities that only moved as packed steps (`moved_ids`,
    /// `moved_steps`), about a third of the bytes.
    PackedMoves,
}

impl UpdateFormat {
    pub fn for_protocol(version: u32) -> Self {
        if version >= 2 {
            UpdateFormat::PackedMoves
        } else {
            UpdateFormat::Whole
        }
    }
}

/// Frames are cut from shared blocks of this size: one allocation serves
/// hundreds of updates, freed once the last of them is sent.
const ENCODE_BLOCK_BYTES: usize = 64 * 1024;

/// Encodes state updates into reused storage, each value written once: the
/// packed lists (most of an update) are varint-encoded straight from the
/// delta into scratch bytes, then copied behind their lengths. Building a
/// `StateUpdate` and letting prost encode it walked every value three times
/// (the message's length, the field's length, the bytes). The frame is the
/// same, byte for byte (tested against prost's own encoding).
#[derive(Debug, Default)]
pub struct UpdateEncoder {
    /// Entered and (under protocol 1, or beyond a move) changed entities:
    /// few per update, so encoded as messages.
    entered: Vec<proto::EntityState>,
    changed: Vec<proto::EntityState>,
    /// Fields 4, 8 and 9's packed values.
    left: Vec<u8>,
    moved_ids: Vec<u8>,
    moved_steps: Vec<u8>,
    block: BytesMut,
}

/// A packed field's bytes behind its key and length (nothing when empty,
/// as prost writes it).
fn packed_len(tag: u32, values: &[u8]) -> usize {
    if values.is_empty() {
        return 0;
    }
    encoding::key_len(tag) + encoding::encoded_len_varint(values.len() as u64) + values.len()
}

fn put_packed(tag: u32, values: &[u8], buf: &mut BytesMut) {
    if values.is_empty() {
        return;
    }
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(values.len() as u64, buf);
    buf.put_slice(values);
}

/// Appends `value` as a protobuf varint. prost's `encode_varint` is the
/// same loop behind a call (it is not inlined); an update packs three
/// varints an entity that moved, and they were a sixth of the tick.
#[inline]
fn push_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Protobuf's zigzag encoding of an sint32.
fn zigzag(n: i32) -> u64 {
    u64::from(((n << 1) ^ (n >> 31)) as u32)
}

impl UpdateEncoder {
    /// One client's state update for this tick, as a `ServerMessage` frame.
    pub fn encode(&mut self, zone: &Zone, delta: &Delta, ack: Option<Ack>, format: UpdateFormat) -> Bytes {
        self.entered.clear();
        self.entered.extend(delta.entered.iter().map(|e| entered(zone, e)));
        self.changed.clear();
        self.moved_ids.clear();
        self.moved_steps.clear();
        // Changes are in ascending id order, so each gap is positive.
        let mut last_id = 0;
        for c in &delta.changed {
            if format == UpdateFormat::PackedMoves && c.only_moved() {
                push_varint(u64::from(c.state.id - last_id), &mut self.moved_ids);
                last_id = c.state.id;
                push_varint(zigzag(c.state.pos.x - c.before.pos.x), &mut self.moved_steps);
                push_varint(zigzag(c.state.pos.y - c.before.pos.y), &mut self.moved_steps);
            } else {
                self.changed.push(changed(c));
            }
        }
        self.left.clear();
        for id in &delta.left {
            push_varint(u64::from(*id), &mut self.left);
        }
        let you = delta.stats.as_ref().map(stats);
        let tick = zone.tick_number();
        let acked_seq = ack.map_or(0, |a| a.seq);
        let durable_tick = ack.map_or(0, |a| a.durable_tick);

        // StateUpdate's fields in prost's order, zero scalars left out.
        let body_len = if tick != 0 { encoding::uint64::encoded_len(1, &tick) } else { 0 }
            + encoding::message::encoded_len_repeated(2, &self.entered)
            + encoding::message::encoded_len_repeated(3, &self.changed)
            + packed_len(4, &self.left)
            + you.as_ref().map_or(0, |you| encoding::message::encoded_len(5, you))
            + if acked_seq != 0 { encoding::uint32::encoded_len(6, &acked_seq) } else { 0 }
            + if durable_tick != 0 { encoding::uint64::encoded_len(7, &durable_tick) } else { 0 }
            + packed_len(8, &self.moved_ids)
            + packed_len(9, &self.moved_steps);
        // A ServerMessage is only its oneof: the update as field 2 is the whole frame.
        let len = encoding::key_len(2) + encoding::encoded_len_varint(body_len as u64) + body_len;
        if self.block.capacity() < len {
            self.block = BytesMut::with_capacity(ENCODE_BLOCK_BYTES.max(len));
        }
        let buf = &mut self.block;
        encoding::encode_key(2, WireType::LengthDelimited, buf);
        encoding::encode_varint(body_len as u64, buf);
        if tick != 0 {
            encoding::uint64::encode(1, &tick, buf);
        }
        encoding::message::encode_repeated(2, &self.entered, buf);
        encoding::message::encode_repeated(3, &self.changed, buf);
        put_packed(4, &self.left, buf);
        if let Some(you) = &you {
            encoding::message::encode(5, you, buf);
        }
        if acked_seq != 0 {
            encoding::uint32::encode(6, &acked_seq, buf);
        }
        if durable_tick != 0 {
            encoding::uint64::encode(7, &durable_tick, buf);
        }
        put_packed(8, &self.moved_ids, buf);
        put_packed(9, &self.moved_steps, buf);
        debug_assert_eq!(buf.len(), len);
        self.block.split().freeze()
    }
}

#[derive(Debug)]
pub struct WelcomeInfo<'a> {
    pub entity_id: u32,
    pub resume_token: &'a str,
    pub resumed: bool,
    /// The tick this process's timeline of the zone started from.
    pub timeline_start_tick: u64,
    pub tick_hz: u32,
    pub view_radius: i32,
    pub server_version: &'a str,
    /// The version the client joined with, which the server speaks to it.
    pub protocol_version: u32,
}

pub fn welcome(zone: &Zone, info: WelcomeInfo<'_>) -> Bytes {
    let c = zone.config();
    proto::encode_server(Body::Welcome(proto::Welcome {
        protocol_version: info.protocol_version,
        zone: c.name.clone(),
        entity_id: info.entity_id,
        tick_rate_hz: info.tick_hz,
        width: c.width,
        height: c.height,
        obstacles: c.obstacles.iter().map(|o| proto::Rect { x: o.x, y: o.y, w: o.w, h: o.h }).collect(),
        tick: zone.tick_number(),
        server_version: info.server_version.to_owned(),
        view_radius: info.view_radius.unsigned_abs(),
        max_speed: c.max_speed.unsigned_abs(),
        attack_range: c.attack_range.unsigned_abs(),
        pickup_range: c.pickup_range.unsigned_abs(),
        resume_token: info.resume_token.to_owned(),
        resumed: info.resumed,
        timeline: zone.epoch(),
        timeline_start_tick: info.timeline_start_tick,
        exits: c
            .exits
            .iter()
            .map(|e| {
                let a = e.area;
                proto::Exit { area: Some(proto::Rect { x: a.x, y: a.y, w: a.w, h: a.h }), to: e.to.clone() }
            })
            .collect(),
    }))
}

pub fn rejected(seq: u32, reason: &str) -> Bytes {
    proto::encode_server(Body::Rejected(proto::CommandRejected { seq, reason: reason.to_owned() }))
}

pub fn notice(kind: proto::NoticeKind, text: &str, deadline_ms: u32) -> Bytes {
    proto::encode_server(Body::Notice(proto::Notice {
        kind: kind as i32,
        text: text.to_owned(),
        migrate_to: String::new(),
        deadline_ms,
        travel_to: String::new(),
    }))
}

/// The character walked into an exit to `zone`: play there next.
pub fn travel(zone: &str) -> Bytes {
    proto::encode_server(Body::Notice(proto::Notice {
        kind: proto::NoticeKind::Travel as i32,
        text: format!("You walk on to {zone}."),
        migrate_to: String::new(),
        deadline_ms: 0,
        travel_to: zone.to_owned(),
    }))
}

/// The zone now runs at `address`: reconnect there with the resume token.
pub fn migrate(address: &str) -> Bytes {
    proto::encode_server(Body::Notice(proto::Notice {
        kind: proto::NoticeKind::Migrate as i32,
        text: "This zone moved to another server; reconnecting.".to_owned(),
        migrate_to: address.to_owned(),
        deadline_ms: 0,
        travel_to: String::new(),
    }))
}

pub fn error(code: proto::ErrorCode, message: &str) -> Bytes {
    proto::encode_server(Body::Error(proto::Error { code: code as i32, message: message.to_owned() }))
}

pub fn pong(client_time: u64, server_tick: u64) -> Bytes {
    proto::encode_server(Body::Pong(proto::Pong { client_time, server_tick }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_sim::rng::Rng;
    use respawn_sim::{Command, CommandKind, Point, ZoneConfig};

    /// The update as a whole `StateUpdate`, encoded by prost: the oracle.
    fn by_prost(zone: &Zone, delta: &Delta, ack: Option<Ack>, format: UpdateFormat) -> Bytes {
        let mut update = proto::StateUpdate {
            tick: zone.tick_number(),
            entered: delta.entered.iter().map(|e| entered(zone, e)).collect(),
            left: delta.left.clone(),
            you: delta.stats.as_ref().map(stats),
            acked_seq: ack.map_or(0, |a| a.seq),
            durable_tick: ack.map_or(0, |a| a.durable_tick),
            ..Default::default()
        };
        let mut last_id = 0;
        for c in &delta.changed {
            if format == UpdateFormat::PackedMoves && c.only_moved() {
                update.moved_ids.push(c.state.id - last_id);
                last_id = c.state.id;
                update.moved_steps.extend([c.state.pos.x - c.before.pos.x, c.state.pos.y - c.before.pos.y]);
            } else {
                update.changed.push(changed(c));
            }
        }
        proto::encode_server(Body::Update(update))
    }

    fn any_state(rng: &mut Rng, id: u32) -> EntityState {
        let kind = [EntityKind::Player, EntityKind::Npc, EntityKind::Item][rng.below(3) as usize];
        EntityState {
            id,
            kind,
            pos: Point::new(rng.range_i32(-2_000_000, 2_000_000), rng.range_i32(-2_000_000, 2_000_000)),
            hp: rng.range_i32(-5, 500),
            max_hp: rng.range_i32(0, 500),
            level: rng.below(100),
            item: (kind == EntityKind::Item).then_some(ItemKind::Gem),
        }
    }

    fn any_delta(rng: &mut Rng) -> Delta {
        let mut delta = Delta::default();
        let mut id = 0;
        for _ in 0..rng.below(4) {
            id += 1 + rng.below(1_000);
            delta.entered.push(any_state(rng, id));
        }
        for _ in 0..rng.below(200) {
            id += 1 + rng.below(100_000);
            let before = any_state(rng, id);
            let mut state = before;
            state.pos = Point::new(before.pos.x + rng.range_i32(-5_000, 5_000), before.pos.y + rng.range_i32(-50, 50));
            match rng.below(4) {
                0 => state.hp -= 1,
                1 => state.level += 1,
                _ => {}
            }
            delta.changed.push(Changed { state, before });
        }
        delta.left = (0..rng.below(20)).map(|_| rng.below(u32::MAX)).collect();
        if rng.below(2) == 0 {
            delta.stats = Some(SelfStats {
                hp: rng.range_i32(0, 100),
                max_hp: 100,
                level: rng.below(50),
                xp: rng.next_u64() >> rng.below(64),
                gold: rng.next_u64() >> rng.below(64),
                inventory: vec![(ItemKind::Potion, rng.below(9)), (ItemKind::Scroll, 1)],
                respawn_at: (rng.below(3) == 0).then(|| rng.next_u64() >> 40),
            });
        }
        delta
    }

    #[test]
    fn updates_are_byte_for_byte_what_prost_encodes_from_a_whole_state_update() {
        let mut zone = Zone::new(ZoneConfig::standard(1, "wire", 3)).expect("zone");
        let mut rng = Rng::new(7);
        let mut encoder = UpdateEncoder::default();
        for round in 0..400 {
            if round == 200 {
                // Tick 0 leaves the tick out; a player's name goes with its entry.
                zone.tick(&[Command { player: 1, seq: 0, kind: CommandKind::join_fresh("ann") }]);
            }
            let mut delta = any_delta(&mut rng);
            if let Some(ann) = zone.player(1) {
                delta.entered.push(EntityState { id: ann.entity, kind: EntityKind::Player, ..any_state(&mut rng, 0) });
            }
            let ack = (rng.below(2) == 0).then(|| Ack { seq: rng.below(1_000), durable_tick: rng.next_u64() >> 30 });
            for format in [UpdateFormat::Whole, UpdateFormat::PackedMoves] {
                let ours = encoder.encode(&zone, &delta, ack, format);
                assert_eq!(ours, by_prost(&zone, &delta, ack, format), "round {round}, {format:?}");
            }
        }
        assert!(encoder.encode(&zone, &Delta::default(), None, UpdateFormat::PackedMoves).len() > 2);
    }
}
