//! Keeps `proto/respawn.proto` and the hand-written Rust messages in step:
//! every message, encoded with every field set, must carry exactly the field
//! numbers and wire types the schema declares, and every enum value must exist.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use respawn_proto::*;

/// (field number, wire type) pairs per message, and value numbers per enum.
struct Schema {
    messages: BTreeMap<String, BTreeSet<(u32, u8)>>,
    enums: BTreeMap<String, BTreeSet<i32>>,
}

fn parse_schema() -> Schema {
    parse(include_str!("../proto/respawn.proto"))
}

fn parse(text: &str) -> Schema {
    let mut schema = Schema { messages: BTreeMap::new(), enums: BTreeMap::new() };
    let mut current: Option<(bool, String)> = None;
    let enum_names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("enum "))
        .map(|l| l.trim_end_matches('{').trim().to_owned())
        .collect();
    for raw in text.lines() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("message ") {
            let name = name.split(|c: char| c == '{' || c.is_whitespace()).next().unwrap_or("").to_owned();
            schema.messages.entry(name.clone()).or_default();
            current = Some((false, name));
        } else if let Some(name) = line.strip_prefix("enum ") {
            let name = name.trim_end_matches('{').trim().to_owned();
            schema.enums.entry(name.clone()).or_default();
            current = Some((true, name));
        } else if raw.starts_with('}') {
            current = None;
        } else if let (Some((is_enum, name)), Some((lhs, rhs))) = (&current, line.split_once('=')) {
            let number = rhs.trim().trim_end_matches(';').trim();
            let words: Vec<&str> = lhs.split_whitespace().collect();
            if *is_enum {
                schema.enums.get_mut(name).expect("enum").insert(number.parse().expect("enum value"));
                continue;
            }
            let (repeated, ty) = match words.as_slice() {
                ["repeated", ty, _] => (true, *ty),
                [ty, _] => (false, *ty),
                other => panic!("unparsed field line {other:?}"),
            };
            let scalar = matches!(ty, "uint32" | "int32" | "sint32" | "uint64" | "int64" | "sint64" | "bool")
                || enum_names.contains(ty);
            // Repeated scalars are packed in proto3 (wire type 2).
            let wire = if scalar && !repeated { 0 } else { 2 };
            let field = (number.parse().expect("field number"), wire);
            schema.messages.get_mut(name).expect("message").insert(field);
        }
    }
    schema
}

/// Top-level (field number, wire type) pairs of an encoded message.
fn fields_of(bytes: &[u8]) -> BTreeSet<(u32, u8)> {
    let mut out = BTreeSet::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let key = prost::encoding::decode_varint(&mut buf).expect("key");
        let wire = (key & 7) as u8;
        out.insert(((key >> 3) as u32, wire));
        match wire {
            0 => {
                prost::encoding::decode_varint(&mut buf).expect("varint");
            }
            2 => {
                let len = prost::encoding::decode_varint(&mut buf).expect("len") as usize;
                buf = &buf[len..];
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    out
}

fn full_entity() -> EntityState {
    EntityState { id: 1, kind: 1, x: -2, y: 3, hp: 4, max_hp: 5, level: 6, name: "n".into(), item: 2 }
}

fn full_stats() -> PlayerStats {
    PlayerStats {
        hp: 1,
        max_hp: 2,
        level: 3,
        xp: 4,
        gold: 5,
        inventory: vec![InventorySlot { item: 1, count: 2 }],
        dead: true,
        respawn_tick: 6,
        next_level_xp: 7,
    }
}

fn samples() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use client_message::Body as C;
    use server_message::Body as S;
    let join = Join {
        protocol_version: 1,
        token: "t".into(),
        zone: "z".into(),
        resume_token: "r".into(),
        character_ticket: "c".into(),
    };
    let mv = MoveInput { seq: 1, vx: -1, vy: 2 };
    let attack = Attack { seq: 1, target: 2 };
    let pickup = Pickup { seq: 1, item: 2 };
    let ping = Ping { client_time: 1 };
    let rect = Rect { x: 1, y: 2, w: 3, h: 4 };
    let exit = Exit { area: Some(rect.clone()), to: "t".into() };
    let welcome = Welcome {
        protocol_version: 1,
        zone: "z".into(),
        entity_id: 2,
        tick_rate_hz: 20,
        width: 3,
        height: 4,
        obstacles: vec![rect.clone()],
        tick: 5,
        server_version: "v".into(),
        view_radius: 6,
        max_speed: 7,
        attack_range: 8,
        pickup_range: 9,
        resume_token: "r".into(),
        resumed: true,
        timeline: 10,
        timeline_start_tick: 11,
        exits: vec![exit.clone(), exit.clone()],
    };
    let update = StateUpdate {
        tick: 1,
        entered: vec![full_entity()],
        changed: vec![full_entity()],
        left: vec![3],
        you: Some(full_stats()),
        acked_seq: 4,
        durable_tick: 5,
        moved_ids: vec![6, 1],
        moved_steps: vec![-7, 8, 9, -10],
    };
    let pong = Pong { client_time: 1, server_tick: 2 };
    let notice = Notice { kind: 3, text: "t".into(), migrate_to: "m".into(), deadline_ms: 4, travel_to: "z".into() };
    let rejected = CommandRejected { seq: 1, reason: "r".into() };
    let error = Error { code: 1, message: "m".into() };
    let client = |b: C| ClientMessage { body: Some(b) }.encode_to_vec();
    let server = |b: S| ServerMessage { body: Some(b) }.encode_to_vec();
    vec![
        (
            "ClientMessage",
            vec![
                client(C::Join(join.clone())),
                client(C::Move(mv.clone())),
                client(C::Attack(attack.clone())),
                client(C::Pickup(pickup.clone())),
                client(C::Ping(ping.clone())),
                client(C::Leave(Leave {})),
            ],
        ),
        ("Join", vec![join.encode_to_vec()]),
        ("MoveInput", vec![mv.encode_to_vec()]),
        ("Attack", vec![attack.encode_to_vec()]),
        ("Pickup", vec![pickup.encode_to_vec()]),
        ("Ping", vec![ping.encode_to_vec()]),
        ("Leave", vec![Leave {}.encode_to_vec()]),
        (
            "ServerMessage",
            vec![
                server(S::Welcome(welcome.clone())),
                server(S::Update(update.clone())),
                server(S::Pong(pong.clone())),
                server(S::Notice(notice.clone())),
                server(S::Rejected(rejected.clone())),
                server(S::Error(error.clone())),
            ],
        ),
        ("Rect", vec![rect.encode_to_vec()]),
        ("Exit", vec![exit.encode_to_vec()]),
        ("Welcome", vec![welcome.encode_to_vec()]),
        ("EntityState", vec![full_entity().encode_to_vec()]),
        ("InventorySlot", vec![InventorySlot { item: 1, count: 1 }.encode_to_vec()]),
        ("PlayerStats", vec![full_stats().encode_to_vec()]),
        ("StateUpdate", vec![update.encode_to_vec()]),
        ("Pong", vec![pong.encode_to_vec()]),
        ("Notice", vec![notice.encode_to_vec()]),
        ("CommandRejected", vec![rejected.encode_to_vec()]),
        ("Error", vec![error.encode_to_vec()]),
    ]
}

#[test]
fn every_message_matches_the_schema() {
    assert_samples_match(&parse_schema(), samples());
}

/// Every message of `schema` has a sample, and each sample carries exactly
/// the declared field numbers and wire types.
fn assert_samples_match(schema: &Schema, samples: Vec<(&'static str, Vec<Vec<u8>>)>) {
    let covered: BTreeSet<&str> = samples.iter().map(|(n, _)| *n).collect();
    let declared: BTreeSet<&str> = schema.messages.keys().map(String::as_str).collect();
    assert_eq!(covered, declared, "every .proto message has a Rust sample and vice versa");
    for (name, encodings) in samples {
        let seen: BTreeSet<(u32, u8)> = encodings.iter().flat_map(|b| fields_of(b)).collect();
        assert_eq!(&seen, &schema.messages[name], "fields of {name}");
    }
}

#[test]
fn every_enum_matches_the_schema() {
    let schema = parse_schema();
    type IsValid = fn(i32) -> bool;
    let rust: [(&str, IsValid, usize); 4] = [
        ("EntityKind", |v| EntityKind::try_from(v).is_ok(), 4),
        ("ItemKind", |v| ItemKind::try_from(v).is_ok(), 5),
        ("NoticeKind", |v| NoticeKind::try_from(v).is_ok(), 6),
        ("ErrorCode", |v| ErrorCode::try_from(v).is_ok(), 5),
    ];
    assert_eq!(rust.len(), schema.enums.len());
    for (name, valid, variants) in rust {
        let values = &schema.enums[name];
        assert_eq!(values.len(), variants, "{name} variant count");
        assert!(values.iter().all(|v| valid(*v)), "{name} values {values:?}");
        assert!(!valid(values.len() as i32), "{name} has no extra values");
    }
}

fn event_samples() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use respawn_proto::events::{self as ev, event::Kind as K};
    let stack = ev::ItemStack { item: 2, count: 3 };
    let character = ev::Character {
        incarnation: 1,
        level: 2,
        xp: 3,
        gold: 4,
        inventory: vec![stack.clone(), stack.clone()],
        zone: "z".into(),
        x: -6,
        y: 7,
    };
    let joined = ev::PlayerJoined { name: "n".into(), entity: 1, character: Some(character.clone()) };
    let left = ev::PlayerLeft { level: 1, xp: 2, gold: 3, character: Some(character.clone()), travel: "t".into() };
    let item = ev::ItemAcquired { item: 1, count: 2 };
    let gold = ev::GoldChanged { delta: -1, total: 2 };
    let level = ev::LevelUp { level: 2 };
    let killed = ev::PlayerKilled { killer_player: 1, killer_npc: 2 };
    let npc = ev::NpcKilled { npc: 1 };
    let cheat = ev::CheatRejected { reason: "r".into() };
    let xp = ev::XpGained { amount: 1, total: 2 };
    let event = |k: K| {
        ev::Event { schema_version: 1, zone: 1, tick: 2, index: 3, player: 4, epoch: 5, incarnation: 6, kind: Some(k) }
            .encode_to_vec()
    };
    vec![
        (
            "Event",
            vec![
                event(K::PlayerJoined(joined.clone())),
                event(K::PlayerLeft(left.clone())),
                event(K::ItemAcquired(item.clone())),
                event(K::GoldChanged(gold.clone())),
                event(K::LevelUp(level.clone())),
                event(K::PlayerKilled(killed.clone())),
                event(K::NpcKilled(npc.clone())),
                event(K::PlayerRespawned(ev::PlayerRespawned {})),
                event(K::CheatRejected(cheat.clone())),
                event(K::XpGained(xp.clone())),
                event(K::SessionResumed(ev::SessionResumed {})),
                event(K::ZoneStarted(ev::ZoneStarted {})),
                event(K::ZoneStopped(ev::ZoneStopped {})),
            ],
        ),
        ("PlayerJoined", vec![joined.encode_to_vec()]),
        ("PlayerLeft", vec![left.encode_to_vec()]),
        ("Character", vec![character.encode_to_vec()]),
        ("ItemStack", vec![stack.encode_to_vec()]),
        ("ItemAcquired", vec![item.encode_to_vec()]),
        ("GoldChanged", vec![gold.encode_to_vec()]),
        ("LevelUp", vec![level.encode_to_vec()]),
        ("PlayerKilled", vec![killed.encode_to_vec()]),
        ("NpcKilled", vec![npc.encode_to_vec()]),
        ("PlayerRespawned", vec![ev::PlayerRespawned {}.encode_to_vec()]),
        ("CheatRejected", vec![cheat.encode_to_vec()]),
        ("XpGained", vec![xp.encode_to_vec()]),
        ("SessionResumed", vec![ev::SessionResumed {}.encode_to_vec()]),
        ("ZoneStarted", vec![ev::ZoneStarted {}.encode_to_vec()]),
        ("ZoneStopped", vec![ev::ZoneStopped {}.encode_to_vec()]),
    ]
}

#[test]
fn every_event_message_matches_the_schema() {
    assert_samples_match(&parse(include_str!("../proto/events.proto")), event_samples());
}
