//! Snapshot encoding: a versioned, checksummed, self-contained image of a zone.
//!
//! Layout: `b"RSPN"`, format version (u16 LE), reserved (u16), payload length
//! (u32 LE), CRC-32 of the payload (u32 LE), payload. The payload holds the
//! zone's config and every piece of mutable state, in a fixed order with maps
//! in key order, so equal zones encode to equal bytes.

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{Exit, ZoneConfig};
use crate::geom::{Point, Rect};
use crate::ids::ItemKind;
use crate::rng::Rng;
use crate::zone::{Departure, Npc, Player, Zone, ZoneItem};

pub const MAGIC: [u8; 4] = *b"RSPN";
/// The format version this build writes. It also reads
/// [`PREVIOUS_FORMAT_VERSION`], so a zone written by the build before
/// characters were kept can be adopted (its players get incarnation 0).
pub const FORMAT_VERSION: u16 = 3;
pub const PREVIOUS_FORMAT_VERSION: u16 = 2;
const HEADER_LEN: usize = 16;

/// A snapshot payload behind its header (magic, this format's version,
/// length, CRC-32). The fuzz target uses it to reach the payload parser.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    framed_as(FORMAT_VERSION, payload)
}

fn framed_as(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl Zone {
    /// Encodes the whole zone. Equal zones give equal bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.encode_as(FORMAT_VERSION)
    }

    /// The zone in format `version` (the previous one only for tests).
    fn encode_as(&self, version: u16) -> Vec<u8> {
        let current = version == FORMAT_VERSION;
        let mut w = Writer::default();
        write_config(&mut w, &self.config);
        if current {
            write_exits(&mut w, &self.config);
        }
        w.u64(self.epoch);
        w.u64(self.tick);
        w.u64(self.rng.state);
        w.u32(self.next_entity);
        w.u32(self.players.len() as u32);
        for p in self.players.values() {
            w.u64(p.id);
            w.u32(p.entity);
            w.str(&p.name);
            write_point(&mut w, p.pos);
            write_point(&mut w, p.velocity);
            w.i32(p.hp);
            w.u32(p.level);
            w.u64(p.xp);
            w.u64(p.gold);
            w.u32(p.inventory.len() as u32);
            for (kind, count) in &p.inventory {
                w.u8(kind.code());
                w.u32(*count);
            }
            w.u64(p.attack_ready_at);
            w.opt_u64(p.respawn_at);
            if current {
                w.u64(p.incarnation);
            }
        }
        w.u32(self.npcs.len() as u32);
        for n in self.npcs.values() {
            w.u32(n.entity);
            write_point(&mut w, n.pos);
            write_point(&mut w, n.home);
            write_point(&mut w, n.wander_to);
            w.i32(n.hp);
            w.u64(n.attack_ready_at);
            w.opt_u64(n.respawn_at);
        }
        w.u32(self.items.len() as u32);
        for i in self.items.values() {
            w.u32(i.entity);
            w.u8(i.kind.code());
            w.u32(i.amount);
            write_point(&mut w, i.pos);
        }
        if current {
            w.u32(self.departures.len() as u32);
            for (player, d) in &self.departures {
                w.u64(*player);
                w.u64(d.incarnation);
                w.u64(d.tick);
            }
        }
        framed_as(version, &w.buf)
    }

    /// Decodes a snapshot, refusing anything corrupt, truncated, of another
    /// version, or describing an impossible zone.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Zone, DecodeError> {
        let (version, payload) = checked_payload(bytes)?;
        let mut r = Reader::new(payload);
        let mut config = read_config(&mut r)?;
        if version == FORMAT_VERSION {
            config.exits = read_exits(&mut r)?;
        }
        config.validate().map_err(|e| DecodeError::Invalid(e.to_string()))?;
        let epoch = r.u64("epoch")?;
        let tick = r.u64("tick")?;
        let rng = Rng::new(r.u64("rng")?);
        let next_entity = r.u32("next entity")?;
        let mut players = BTreeMap::new();
        let mut player_entities = BTreeMap::new();
        for _ in 0..r.count(60, "players")? {
            let id = r.u64("player id")?;
            let entity = r.u32("player entity")?;
            let name = r.str("player name")?;
            let pos = read_point(&mut r, "player position")?;
            let velocity = read_point(&mut r, "player velocity")?;
            let hp = r.i32("player hp")?;
            let level = r.u32("player level")?;
            let xp = r.u64("player xp")?;
            let gold = r.u64("player gold")?;
            let mut inventory = BTreeMap::new();
            for _ in 0..r.count(5, "inventory")? {
                let kind = read_item_kind(&mut r)?;
                inventory.insert(kind, r.u32("inventory count")?);
            }
            let attack_ready_at = r.u64("player cooldown")?;
            let respawn_at = r.opt_u64("player respawn")?;
            let incarnation = if version == FORMAT_VERSION { r.u64("player incarnation")? } else { 0 };
            if level == 0 || player_entities.insert(entity, id).is_some() {
                return Err(DecodeError::Invalid(format!("player {id}: level 0 or duplicate entity {entity}")));
            }
            let player = Player {
                id,
                entity,
                name,
                pos,
                velocity,
                hp,
                level,
                xp,
                gold,
                inventory,
                attack_ready_at,
                respawn_at,
                incarnation,
            };
            if players.insert(id, player).is_some() {
                return Err(DecodeError::Invalid(format!("player {id} appears twice")));
            }
        }
        let mut npcs = BTreeMap::new();
        for _ in 0..r.count(37, "npcs")? {
            let entity = r.u32("npc entity")?;
            let npc = Npc {
                entity,
                pos: read_point(&mut r, "npc position")?,
                home: read_point(&mut r, "npc home")?,
                wander_to: read_point(&mut r, "npc goal")?,
                hp: r.i32("npc hp")?,
                attack_ready_at: r.u64("npc cooldown")?,
                respawn_at: r.opt_u64("npc respawn")?,
            };
            if npcs.insert(entity, npc).is_some() {
                return Err(DecodeError::Invalid(format!("npc {entity} appears twice")));
            }
        }
        let mut items = BTreeMap::new();
        for _ in 0..r.count(17, "items")? {
            let entity = r.u32("item entity")?;
            let kind = read_item_kind(&mut r)?;
            let item =
                ZoneItem { entity, kind, amount: r.u32("item amount")?, pos: read_point(&mut r, "item position")? };
            if items.insert(entity, item).is_some() {
                return Err(DecodeError::Invalid(format!("item {entity} appears twice")));
            }
        }
        let mut departures = BTreeMap::new();
        if version == FORMAT_VERSION {
            for _ in 0..r.count(24, "departures")? {
                let player = r.u64("departed player")?;
                let departure = Departure { incarnation: r.u64("departed incarnation")?, tick: r.u64("departed at")? };
                if departures.insert(player, departure).is_some() {
                    return Err(DecodeError::Invalid(format!("player {player} departed twice")));
                }
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::Invalid(format!("{} unexpected trailing bytes", r.remaining())));
        }
        Ok(Zone {
            config,
            epoch,
            tick,
            rng,
            next_entity,
            players,
            player_entities,
            npcs,
            items,
            departures,
            player_grid: Default::default(),
        })
    }
}

/// Whether a build that writes format `writes` reads a snapshot of format
/// `found`: its own, and the current build also the previous one.
pub fn readable(found: u16, writes: u16) -> bool {
    found == writes || (writes == FORMAT_VERSION && found == PREVIOUS_FORMAT_VERSION)
}

/// The format version a snapshot declares, if it has the header at all.
pub fn format_of(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [m0, m1, m2, m3, lo, hi, ..] if [*m0, *m1, *m2, *m3] == MAGIC => Some(u16::from(*lo) | (u16::from(*hi) << 8)),
        _ => None,
    }
}

/// The format version and payload of a snapshot whose header and checksum hold.
fn checked_payload(bytes: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    if bytes.len() < 4 || bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let mut r = Reader::new(&bytes[4..]);
    let version = u16::from(r.u8("version")?) | (u16::from(r.u8("version")?) << 8);
    if !readable(version, FORMAT_VERSION) {
        return Err(DecodeError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    r.u8("reserved")?;
    r.u8("reserved")?;
    let declared = r.u32("payload length")?;
    let stored = r.u32("checksum")?;
    let payload = bytes.get(HEADER_LEN..).ok_or(DecodeError::Truncated("header"))?;
    if payload.len() as u64 != u64::from(declared) {
        return Err(DecodeError::LengthMismatch { declared: u64::from(declared), actual: payload.len() as u64 });
    }
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    Ok((version, payload))
}

fn write_point(w: &mut Writer, p: Point) {
    w.i32(p.x);
    w.i32(p.y);
}

fn read_point(r: &mut Reader<'_>, what: &'static str) -> Result<Point, DecodeError> {
    Ok(Point::new(r.i32(what)?, r.i32(what)?))
}

fn read_item_kind(r: &mut Reader<'_>) -> Result<ItemKind, DecodeError> {
    let code = r.u8("item kind")?;
    ItemKind::from_code(code).ok_or_else(|| DecodeError::Invalid(format!("unknown item kind {code}")))
}

fn write_config(w: &mut Writer, c: &ZoneConfig) {
    w.u32(c.zone_id);
    w.str(&c.name);
    w.u64(c.seed);
    w.i32(c.width);
    w.i32(c.height);
    w.u32(c.obstacles.len() as u32);
    for o in &c.obstacles {
        for v in [o.x, o.y, o.w, o.h] {
            w.i32(v);
        }
    }
    for v in [c.body_radius, c.max_speed, c.attack_range] {
        w.i32(v);
    }
    w.u32(c.attack_cooldown_ticks);
    w.i32(c.pickup_range);
    w.u32(c.respawn_ticks);
    w.u32(c.npc_count);
    w.i32(c.npc_speed);
    w.i32(c.npc_aggro_range);
    w.u32(c.item_spawn_interval_ticks);
    w.u32(c.max_items);
    w.u32(c.inventory_slots);
}

fn write_exits(w: &mut Writer, c: &ZoneConfig) {
    w.u32(c.exits.len() as u32);
    for e in &c.exits {
        for v in [e.area.x, e.area.y, e.area.w, e.area.h] {
            w.i32(v);
        }
        w.str(&e.to);
        write_point(w, e.arrival);
    }
}

fn read_exits(r: &mut Reader<'_>) -> Result<Vec<Exit>, DecodeError> {
    let mut exits = Vec::new();
    for _ in 0..r.count(28, "exits")? {
        let area = Rect::new(r.i32("exit")?, r.i32("exit")?, r.i32("exit")?, r.i32("exit")?);
        let to = r.str("exit to")?;
        exits.push(Exit { area, to, arrival: read_point(r, "exit arrival")? });
    }
    Ok(exits)
}

fn read_config(r: &mut Reader<'_>) -> Result<ZoneConfig, DecodeError> {
    let zone_id = r.u32("zone id")?;
    let name = r.str("zone name")?;
    let seed = r.u64("seed")?;
    let width = r.i32("width")?;
    let height = r.i32("height")?;
    let mut obstacles = Vec::new();
    for _ in 0..r.count(16, "obstacles")? {
        obstacles.push(Rect::new(r.i32("obstacle")?, r.i32("obstacle")?, r.i32("obstacle")?, r.i32("obstacle")?));
    }
    Ok(ZoneConfig {
        zone_id,
        name,
        seed,
        width,
        height,
        obstacles,
        body_radius: r.i32("body radius")?,
        max_speed: r.i32("max speed")?,
        attack_range: r.i32("attack range")?,
        attack_cooldown_ticks: r.u32("attack cooldown")?,
        pickup_range: r.i32("pickup range")?,
        respawn_ticks: r.u32("respawn ticks")?,
        npc_count: r.u32("npc count")?,
        npc_speed: r.i32("npc speed")?,
        npc_aggro_range: r.i32("npc aggro range")?,
        item_spawn_interval_ticks: r.u32("item spawn interval")?,
        max_items: r.u32("max items")?,
        inventory_slots: r.u32("inventory slots")?,
        exits: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Character, Command, CommandKind};

    fn played_zone() -> Zone {
        let mut z = Zone::new(ZoneConfig::standard(3, "test", 9)).expect("zone");
        let join = |p, n: &str| Command { player: p, seq: 0, kind: CommandKind::join_fresh(n) };
        z.tick(&[join(1, "ann"), join(2, "bob")]);
        for _ in 0..30 {
            z.tick(&[Command { player: 1, seq: 1, kind: CommandKind::Move { velocity: Point::new(10, 5) } }]);
        }
        z
    }

    #[test]
    fn round_trip_is_exact() {
        let z = played_zone();
        let bytes = z.encode_snapshot();
        let back = Zone::decode_snapshot(&bytes).expect("decode");
        assert_eq!(back, z);
        assert_eq!(back.encode_snapshot(), bytes);
        assert_eq!((back.config().zone_id, back.tick_number()), (3, 31));
    }

    #[test]
    fn the_previous_format_is_read_with_characters_no_platform_keeps() {
        let mut z = played_zone();
        let old = z.encode_as(PREVIOUS_FORMAT_VERSION);
        assert_eq!(format_of(&old), Some(PREVIOUS_FORMAT_VERSION));
        let back = Zone::decode_snapshot(&old).expect("a version-2 snapshot decodes");
        assert_eq!(back, z, "no player of the played zone has an incarnation or a departure, no exit");

        let mut config = z.config.clone();
        config.exits =
            vec![Exit { area: Rect::new(10, 10, 100, 100), to: "caverns".into(), arrival: Point::new(5, 5) }];
        z.config = config;
        let kept = Character { incarnation: 7, ..Character::fresh(7) };
        z.tick(&[Command { player: 3, seq: 0, kind: CommandKind::Join { name: "cy".into(), character: kept } }]);
        z.tick(&[Command { player: 2, seq: 0, kind: CommandKind::Leave }]);
        let back = Zone::decode_snapshot(&z.encode_snapshot()).expect("decode");
        assert_eq!(back, z, "incarnations, departures and exits round-trip");
        assert_eq!(back.player(3).map(|p| p.incarnation), Some(7));
        assert_eq!(back.departures().len(), 1);
    }

    #[test]
    fn corruption_is_refused() {
        let bytes = played_zone().encode_snapshot();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(Zone::decode_snapshot(&flipped), Err(DecodeError::ChecksumMismatch { .. })));

        assert_eq!(format_of(&bytes), Some(FORMAT_VERSION));
        let mut future = bytes.clone();
        future[4] = 9;
        assert_eq!(format_of(&future), Some(9));
        assert_eq!(format_of(b"RSPN"), None);
        let err = Zone::decode_snapshot(&future).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { found: 9, supported: FORMAT_VERSION });
        assert!(err.to_string().contains("version 9"));

        assert_eq!(Zone::decode_snapshot(b"nope"), Err(DecodeError::BadMagic));
        assert!(matches!(Zone::decode_snapshot(&bytes[..bytes.len() - 3]), Err(DecodeError::LengthMismatch { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = played_zone().encode_snapshot();
        for len in 0..bytes.len() {
            assert!(Zone::decode_snapshot(&bytes[..len]).is_err(), "len {len} accepted");
        }
    }
}
