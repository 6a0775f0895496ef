//! Conversions from simulation values to protocol messages, and encoding.

use bytes::{Bytes, BytesMut};
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

/// Encodes state updates into reused storage: one message whose lists keep
/// their capacity, and a block the frames are split from.
#[derive(Debug, Default)]
pub struct UpdateEncoder {
    update: proto::StateUpdate,
    block: BytesMut,
}

impl UpdateEncoder {
    /// One client's state update for this tick, as a `ServerMessage` frame.
    pub fn encode(&mut self, zone: &Zone, delta: &Delta, ack: Option<Ack>, format: UpdateFormat) -> Bytes {
        let u = &mut self.update;
        u.tick = zone.tick_number();
        u.entered.clear();
        u.entered.extend(delta.entered.iter().map(|e| entered(zone, e)));
        u.changed.clear();
        u.moved_ids.clear();
        u.moved_steps.clear();
        // Changes are in ascending id order, so each gap is positive.
        let mut last_id = 0;
        for c in &delta.changed {
            if format == UpdateFormat::PackedMoves && c.only_moved() {
                u.moved_ids.push(c.state.id - last_id);
                last_id = c.state.id;
                u.moved_steps.push(c.state.pos.x - c.before.pos.x);
                u.moved_steps.push(c.state.pos.y - c.before.pos.y);
            } else {
                u.changed.push(changed(c));
            }
        }
        u.left.clear();
        u.left.extend_from_slice(&delta.left);
        u.you = delta.stats.as_ref().map(stats);
        u.acked_seq = ack.map_or(0, |a| a.seq);
        u.durable_tick = ack.map_or(0, |a| a.durable_tick);
        // A ServerMessage is only its oneof: the body as field 2 is the whole frame.
        let len = prost::encoding::message::encoded_len(2, u);
        if self.block.capacity() < len {
            self.block = BytesMut::with_capacity(ENCODE_BLOCK_BYTES.max(len));
        }
        prost::encoding::message::encode(2, u, &mut self.block);
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
