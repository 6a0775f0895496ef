//! Domain events of the simulation in their published form (`events.proto`).

use prost::Message;
use respawn_proto::events::{self as ev, event::Kind};
use respawn_sim::{Character, DomainEvent, EventKind, Killer};

/// A character as the events schema carries it.
fn character(c: &Character) -> ev::Character {
    let (zone, pos) = c.place.clone().unwrap_or_default();
    ev::Character {
        incarnation: c.incarnation,
        level: c.level,
        xp: c.xp,
        gold: c.gold,
        inventory: c
            .inventory
            .iter()
            .map(|(kind, count)| ev::ItemStack { item: u32::from(kind.code()), count: *count })
            .collect(),
        zone,
        x: pos.x,
        y: pos.y,
    }
}

pub fn to_proto(e: &DomainEvent) -> ev::Event {
    let kind = match &e.kind {
        EventKind::PlayerJoined { name, entity, character: c, .. } => {
            Kind::PlayerJoined(ev::PlayerJoined { name: name.clone(), entity: *entity, character: Some(character(c)) })
        }
        EventKind::PlayerLeft { character: c, travel, .. } => Kind::PlayerLeft(ev::PlayerLeft {
            level: c.level,
            xp: c.xp,
            gold: c.gold,
            character: Some(character(c)),
            travel: travel.clone().unwrap_or_default(),
        }),
        EventKind::ItemAcquired { item, count, .. } => {
            Kind::ItemAcquired(ev::ItemAcquired { item: u32::from(item.code()), count: *count })
        }
        EventKind::GoldChanged { delta, total, .. } => {
            Kind::GoldChanged(ev::GoldChanged { delta: *delta, total: *total })
        }
        EventKind::LevelUp { level, .. } => Kind::LevelUp(ev::LevelUp { level: *level }),
        EventKind::PlayerKilled { killer, .. } => Kind::PlayerKilled(match killer {
            Killer::Player(p) => ev::PlayerKilled { killer_player: *p, killer_npc: 0 },
            Killer::Npc(n) => ev::PlayerKilled { killer_player: 0, killer_npc: *n },
        }),
        EventKind::NpcKilled { npc, .. } => Kind::NpcKilled(ev::NpcKilled { npc: *npc }),
        EventKind::PlayerRespawned { .. } => Kind::PlayerRespawned(ev::PlayerRespawned {}),
        EventKind::CheatRejected { reason, .. } => {
            Kind::CheatRejected(ev::CheatRejected { reason: reason.as_str().to_owned() })
        }
        EventKind::XpGained { amount, total, .. } => Kind::XpGained(ev::XpGained { amount: *amount, total: *total }),
        EventKind::SessionResumed { .. } => Kind::SessionResumed(ev::SessionResumed {}),
        EventKind::ZoneStarted => Kind::ZoneStarted(ev::ZoneStarted {}),
        EventKind::ZoneStopped => Kind::ZoneStopped(ev::ZoneStopped {}),
    };
    ev::Event {
        schema_version: ev::EVENT_SCHEMA_VERSION,
        zone: e.id.zone,
        tick: e.id.tick,
        index: e.id.index,
        // The partition key: 0 for none.
        player: e.kind.player().unwrap_or(0),
        epoch: e.id.epoch,
        incarnation: e.incarnation,
        kind: Some(kind),
    }
}

/// Every event of a tick, encoded for the outbox.
pub fn encode_all(events: &[DomainEvent]) -> Vec<Vec<u8>> {
    events.iter().map(|e| to_proto(e).encode_to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_sim::{EventId, ItemKind};

    #[test]
    fn events_keep_their_id_and_player() {
        let e = DomainEvent {
            id: EventId { zone: 3, epoch: 5, tick: 40, index: 2 },
            incarnation: 4,
            kind: EventKind::ItemAcquired { player: 77, item: ItemKind::Gem, count: 1 },
        };
        let bytes = encode_all(std::slice::from_ref(&e));
        let back = ev::Event::decode_checked(&bytes[0]).expect("decodes");
        assert_eq!((back.id(), back.player, back.incarnation), ("3-5-40-2".to_owned(), 77, 4));
        assert_eq!(back.kind, Some(Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 1 })));
    }
}
