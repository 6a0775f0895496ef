//! Player records projected from domain events. Pure: the store loads the
//! records a batch touches, folds the batch's *newly stored* events into
//! them, and writes them back in the transaction that stored the events, so
//! a record is never ahead of or behind the event table.

use std::collections::BTreeMap;

use respawn_proto::events::{event::Kind, Event};

/// Longest name a record keeps (the `players.name` column).
pub const NAME_MAX_CHARS: usize = 64;

/// What the events say about a player's character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerRecord {
    pub player: u64,
    pub name: String,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    /// Item code → count held.
    pub inventory: BTreeMap<u32, u64>,
    pub last_zone: u32,
    pub online: bool,
    /// Events folded into this record.
    pub events: u64,
}

impl PlayerRecord {
    /// A player no event has described yet: a new character.
    pub fn new(player: u64) -> Self {
        Self {
            player,
            name: String::new(),
            level: 1,
            xp: 0,
            gold: 0,
            inventory: BTreeMap::new(),
            last_zone: 0,
            online: false,
            events: 0,
        }
    }

    /// Folds one event about this player into the record.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.last_zone = event.zone;
        match &event.kind {
            // Every session starts a new character in the simulation.
            Some(Kind::PlayerJoined(j)) => {
                let name = if j.name.is_empty() {
                    std::mem::take(&mut self.name)
                } else {
                    j.name.chars().take(NAME_MAX_CHARS).collect()
                };
                let (last_zone, events) = (self.last_zone, self.events);
                *self = Self { name, online: true, last_zone, events, ..Self::new(self.player) };
            }
            Some(Kind::PlayerLeft(l)) => {
                self.level = l.level;
                self.xp = l.xp;
                self.gold = l.gold;
                self.online = false;
            }
            Some(Kind::ItemAcquired(i)) => {
                *self.inventory.entry(i.item).or_insert(0) += u64::from(i.count);
            }
            Some(Kind::GoldChanged(g)) => self.gold = g.total,
            Some(Kind::XpGained(x)) => self.xp = x.total,
            Some(Kind::LevelUp(l)) => self.level = l.level,
            Some(Kind::SessionResumed(_)) => self.online = true,
            Some(
                Kind::PlayerKilled(_)
                | Kind::NpcKilled(_)
                | Kind::PlayerRespawned(_)
                | Kind::CheatRejected(_)
                | Kind::ZoneStarted(_)
                | Kind::ZoneStopped(_),
            )
            | None => {}
        }
    }

    /// The inventory as stored: `item:count` pairs, comma-separated, by item code.
    pub fn inventory_text(&self) -> String {
        self.inventory.iter().map(|(item, count)| format!("{item}:{count}")).collect::<Vec<_>>().join(",")
    }

    /// Reads [`Self::inventory_text`] back; pairs that do not parse are skipped.
    pub fn parse_inventory(text: &str) -> BTreeMap<u32, u64> {
        text.split(',')
            .filter_map(|pair| {
                let (item, count) = pair.split_once(':')?;
                Some((item.parse().ok()?, count.parse().ok()?))
            })
            .collect()
    }
}

/// Folds `events` (in consumption order) into `records`, creating records
/// for players seen for the first time. Events about no player (id 0) are skipped.
pub fn fold(records: &mut BTreeMap<u64, PlayerRecord>, events: &[&Event]) {
    for event in events.iter().filter(|e| e.player != 0) {
        records.entry(event.player).or_insert_with(|| PlayerRecord::new(event.player)).apply(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_proto::events::{self as ev, EVENT_SCHEMA_VERSION};

    fn event(player: u64, zone: u32, kind: Kind) -> Event {
        Event { schema_version: EVENT_SCHEMA_VERSION, zone, tick: 1, index: 0, player, epoch: 1, kind: Some(kind) }
    }

    #[test]
    fn a_session_is_folded_into_the_record() {
        let events = [
            event(7, 1, Kind::PlayerJoined(ev::PlayerJoined { name: "ada".into(), entity: 3 })),
            event(7, 1, Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 1 })),
            event(7, 1, Kind::ItemAcquired(ev::ItemAcquired { item: 3, count: 2 })),
            event(7, 1, Kind::GoldChanged(ev::GoldChanged { delta: 5, total: 5 })),
            event(7, 1, Kind::XpGained(ev::XpGained { amount: 40, total: 40 })),
            event(7, 1, Kind::LevelUp(ev::LevelUp { level: 2 })),
            event(8, 1, Kind::GoldChanged(ev::GoldChanged { delta: 1, total: 1 })),
            event(7, 2, Kind::PlayerKilled(ev::PlayerKilled { killer_player: 0, killer_npc: 4 })),
            event(0, 2, Kind::NpcKilled(ev::NpcKilled { npc: 1 })),
        ];
        let mut records = BTreeMap::new();
        fold(&mut records, &events.iter().collect::<Vec<_>>());
        let ada = &records[&7];
        assert_eq!((ada.name.as_str(), ada.level, ada.xp, ada.gold), ("ada", 2, 40, 5));
        assert_eq!(ada.inventory_text(), "3:3");
        assert_eq!((ada.last_zone, ada.online, ada.events), (2, true, 7));
        assert_eq!(records[&8].gold, 1);
        assert_eq!(records.len(), 2, "player 0 has no record");

        let left = event(7, 2, Kind::PlayerLeft(ev::PlayerLeft { level: 2, xp: 45, gold: 9 }));
        fold(&mut records, &[&left]);
        assert_eq!((records[&7].xp, records[&7].gold, records[&7].online), (45, 9, false));

        let back = event(7, 2, Kind::SessionResumed(ev::SessionResumed {}));
        let zone = event(0, 2, Kind::ZoneStarted(ev::ZoneStarted {}));
        fold(&mut records, &[&back, &zone]);
        assert!(records[&7].online, "a resumed session is online");
        assert_eq!(records.len(), 2, "zone events concern no player");

        // A new session: a new character under the same name and id.
        let again = event(7, 1, Kind::PlayerJoined(ev::PlayerJoined { name: String::new(), entity: 9 }));
        fold(&mut records, &[&again]);
        let ada = &records[&7];
        assert_eq!((ada.name.as_str(), ada.level, ada.gold, ada.inventory.len(), ada.events), ("ada", 1, 0, 0, 10));
    }

    #[test]
    fn the_inventory_text_round_trips_and_skips_garbage() {
        let mut r = PlayerRecord::new(1);
        r.inventory.extend([(2, 4), (4, 1)]);
        assert_eq!(PlayerRecord::parse_inventory(&r.inventory_text()), r.inventory);
        assert_eq!(PlayerRecord::parse_inventory("2:x,,3:1,junk"), BTreeMap::from([(3, 1)]));
        assert!(PlayerRecord::parse_inventory("").is_empty());
    }
}
