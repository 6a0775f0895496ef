//! Player records projected from domain events, and the characters they
//! keep. Pure: the store loads the records a batch touches, folds the
//! batch's *newly stored* events into them, and writes them back in the
//! transaction that stored the events (holding their rows), so a record is
//! never ahead of or behind the event table, and every check below is made
//! at the store, against the stored record.
//!
//! A kept character (incarnation above 0) is in one of three holds: at rest
//! (its state is the record's), claimed for a zone by `POST /v1/play` (a
//! new, higher incarnation, with a ticket in flight), or in that zone (the
//! zone's `PlayerJoined` of that incarnation was stored). A record takes
//! only its current incarnation's events: a stale writer (a zone rolled
//! back to before a stay ended, a superseded server) cannot write an older
//! state over a newer one. The character is at rest again when that stay's
//! `PlayerLeft`, carrying the whole character, is stored.

use std::collections::BTreeMap;

use respawn_proto::events::{event::Kind, Character, Event};

/// Longest name a record keeps (the `players.name` column).
pub const NAME_MAX_CHARS: usize = 64;

/// How long a claim whose ticket was never used holds the character for
/// its zone: a ticket lives a minute, and a join of it reaches the ledger
/// well within this even through Kafka.
pub const CLAIM_LAPSE_MS: u64 = 5 * 60 * 1_000;

/// Where a kept character is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Nowhere: its state is the record's.
    AtRest,
    /// Promised to `zone` (by name) at `at_ms` (Unix milliseconds).
    Claimed { zone: String, at_ms: u64 },
    /// In `zone`: its join is stored, its leaving not yet.
    InZone { zone: String },
}

impl Hold {
    /// The stored form: (code, zone, at_ms).
    pub fn to_columns(&self) -> (u8, &str, u64) {
        match self {
            Hold::AtRest => (0, "", 0),
            Hold::Claimed { zone, at_ms } => (1, zone, *at_ms),
            Hold::InZone { zone } => (2, zone, 0),
        }
    }

    pub fn from_columns(code: u8, zone: String, at_ms: u64) -> Self {
        match code {
            1 => Hold::Claimed { zone, at_ms },
            2 => Hold::InZone { zone },
            _ => Hold::AtRest,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Hold::AtRest => "at_rest",
            Hold::Claimed { .. } => "claimed",
            Hold::InZone { .. } => "in_zone",
        }
    }

    /// The zone it is claimed for or in.
    pub fn zone(&self) -> Option<&str> {
        match self {
            Hold::AtRest => None,
            Hold::Claimed { zone, .. } | Hold::InZone { zone } => Some(zone),
        }
    }
}

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
    /// The zone (id) of the newest event taken.
    pub last_zone: u32,
    /// Where it stood when it last left a zone (or where it travels to):
    /// that zone's name and the position.
    pub place: Option<(String, i32, i32)>,
    pub online: bool,
    /// Events folded into this record.
    pub events: u64,
    /// The newest stay's incarnation (0: never kept, sessions only).
    pub incarnation: u64,
    pub hold: Hold,
}

/// What `POST /v1/play` may do with a character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Take it into the zone asked for as this incarnation, in this state
    /// (a zone that has it already takes it back as it is there).
    Granted { incarnation: u64 },
    /// It is claimed for or in another zone: it must leave there first.
    Elsewhere { zone: String },
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
            place: None,
            online: false,
            events: 0,
            incarnation: 0,
            hold: Hold::AtRest,
        }
    }

    /// Claims the character for `zone` at `now_ms`: from rest (or a lapsed
    /// claim) a new incarnation; again for the zone it is claimed for or in,
    /// the same one.
    pub fn claim(&mut self, zone: &str, now_ms: u64) -> Claim {
        match &self.hold {
            Hold::Claimed { zone: held, .. } if held == zone => {
                self.hold = Hold::Claimed { zone: zone.to_owned(), at_ms: now_ms };
            }
            Hold::InZone { zone: held } if held == zone => {}
            Hold::Claimed { zone: held, at_ms } if now_ms.saturating_sub(*at_ms) <= CLAIM_LAPSE_MS => {
                return Claim::Elsewhere { zone: held.clone() };
            }
            Hold::InZone { zone: held } => return Claim::Elsewhere { zone: held.clone() },
            Hold::AtRest | Hold::Claimed { .. } => {
                self.incarnation += 1;
                self.hold = Hold::Claimed { zone: zone.to_owned(), at_ms: now_ms };
            }
        }
        Claim::Granted { incarnation: self.incarnation }
    }

    /// Folds one event about this player into the record; returns whether
    /// it was taken (`false`: an event of a stay that is not the current one).
    pub fn apply(&mut self, event: &Event) -> bool {
        let taken = if event.incarnation == 0 { self.apply_session(event) } else { self.apply_kept(event) };
        if taken {
            self.events += 1;
            self.last_zone = event.zone;
        }
        taken
    }

    /// An event of a character no platform keeps: each session starts a new
    /// one. A kept character takes none of them.
    fn apply_session(&mut self, event: &Event) -> bool {
        if self.incarnation > 0 {
            return false;
        }
        match &event.kind {
            Some(Kind::PlayerJoined(j)) => {
                let name = self.joined_name(&j.name);
                let (last_zone, events) = (self.last_zone, self.events);
                *self = Self { name, online: true, last_zone, events, ..Self::new(self.player) };
            }
            Some(Kind::PlayerLeft(l)) => {
                self.level = l.level;
                self.xp = l.xp;
                self.gold = l.gold;
                self.online = false;
            }
            _ => self.apply_progress(event),
        }
        true
    }

    fn apply_kept(&mut self, event: &Event) -> bool {
        let current = event.incarnation == self.incarnation;
        match &event.kind {
            Some(Kind::PlayerJoined(j)) => {
                let claimed = matches!(self.hold, Hold::Claimed { .. });
                if event.incarnation < self.incarnation || (current && !claimed) {
                    return false;
                }
                self.name = self.joined_name(&j.name);
                if let Some(c) = &j.character {
                    self.set_character(c);
                }
                let zone = self.hold.zone().unwrap_or_default().to_owned();
                self.incarnation = event.incarnation;
                self.hold = Hold::InZone { zone };
                self.online = true;
            }
            _ if !current || !matches!(self.hold, Hold::InZone { .. }) => return false,
            Some(Kind::PlayerLeft(l)) => {
                if let Some(c) = &l.character {
                    self.set_character(c);
                }
                self.hold = Hold::AtRest;
                self.online = false;
            }
            _ => self.apply_progress(event),
        }
        true
    }

    fn joined_name(&mut self, name: &str) -> String {
        if name.is_empty() {
            std::mem::take(&mut self.name)
        } else {
            name.chars().take(NAME_MAX_CHARS).collect()
        }
    }

    fn set_character(&mut self, c: &Character) {
        self.level = c.level.max(1);
        self.xp = c.xp;
        self.gold = c.gold;
        self.inventory = c.inventory.iter().filter(|s| s.count > 0).map(|s| (s.item, u64::from(s.count))).collect();
        self.place = (!c.zone.is_empty()).then(|| (c.zone.clone(), c.x, c.y));
    }

    /// What happened to the character while it was in a zone.
    fn apply_progress(&mut self, event: &Event) {
        match &event.kind {
            Some(Kind::ItemAcquired(i)) => {
                *self.inventory.entry(i.item).or_insert(0) += u64::from(i.count);
            }
            Some(Kind::GoldChanged(g)) => self.gold = g.total,
            Some(Kind::XpGained(x)) => self.xp = x.total,
            Some(Kind::LevelUp(l)) => self.level = l.level,
            Some(Kind::SessionResumed(_)) => self.online = true,
            Some(
                Kind::PlayerJoined(_)
                | Kind::PlayerLeft(_)
                | Kind::PlayerKilled(_)
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

/// [`PlayerRecord::claim`] on `player`'s record as stored (`None`: a new
/// character named `name`); answers the claim and the record to store.
pub fn claim_stored(
    stored: Option<PlayerRecord>,
    player: u64,
    name: &str,
    zone: &str,
    now_ms: u64,
) -> (Claim, PlayerRecord) {
    let mut record = stored.unwrap_or_else(|| PlayerRecord { name: name.to_owned(), ..PlayerRecord::new(player) });
    (record.claim(zone, now_ms), record)
}

/// Folds `events` (in consumption order) into `records`, creating records
/// for players seen for the first time. Events about no player (id 0) are
/// skipped. Returns how many were not taken (stale writers' events).
pub fn fold(records: &mut BTreeMap<u64, PlayerRecord>, events: &[&Event]) -> u64 {
    let mut stale = 0;
    for event in events.iter().filter(|e| e.player != 0) {
        if !records.entry(event.player).or_insert_with(|| PlayerRecord::new(event.player)).apply(event) {
            stale += 1;
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_proto::events::{self as ev, ItemStack, EVENT_SCHEMA_VERSION};

    fn event(player: u64, zone: u32, kind: Kind) -> Event {
        kept(player, zone, 0, kind)
    }

    fn kept(player: u64, zone: u32, incarnation: u64, kind: Kind) -> Event {
        Event {
            schema_version: EVENT_SCHEMA_VERSION,
            zone,
            tick: 1,
            index: 0,
            player,
            epoch: 1,
            incarnation,
            kind: Some(kind),
        }
    }

    fn character(incarnation: u64, gold: u64) -> ev::Character {
        ev::Character {
            incarnation,
            level: 2,
            xp: 150,
            gold,
            inventory: vec![ItemStack { item: 3, count: 2 }],
            zone: "meadow".into(),
            x: 500,
            y: 600,
        }
    }

    fn joined(c: ev::Character) -> Kind {
        Kind::PlayerJoined(ev::PlayerJoined { name: "ada".into(), entity: 3, character: Some(c) })
    }

    fn left(c: ev::Character) -> Kind {
        Kind::PlayerLeft(ev::PlayerLeft {
            level: c.level,
            xp: c.xp,
            gold: c.gold,
            character: Some(c),
            travel: String::new(),
        })
    }

    #[test]
    fn a_session_is_folded_into_the_record() {
        let events = [
            event(7, 1, Kind::PlayerJoined(ev::PlayerJoined { name: "ada".into(), entity: 3, character: None })),
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
        assert_eq!(fold(&mut records, &events.iter().collect::<Vec<_>>()), 0);
        let ada = &records[&7];
        assert_eq!((ada.name.as_str(), ada.level, ada.xp, ada.gold), ("ada", 2, 40, 5));
        assert_eq!(ada.inventory_text(), "3:3");
        assert_eq!((ada.last_zone, ada.online, ada.events), (2, true, 7));
        assert_eq!(records[&8].gold, 1);
        assert_eq!(records.len(), 2, "player 0 has no record");

        let left = event(
            7,
            2,
            Kind::PlayerLeft(ev::PlayerLeft { level: 2, xp: 45, gold: 9, character: None, travel: String::new() }),
        );
        fold(&mut records, &[&left]);
        assert_eq!((records[&7].xp, records[&7].gold, records[&7].online), (45, 9, false));

        let back = event(7, 2, Kind::SessionResumed(ev::SessionResumed {}));
        let zone = event(0, 2, Kind::ZoneStarted(ev::ZoneStarted {}));
        fold(&mut records, &[&back, &zone]);
        assert!(records[&7].online, "a resumed session is online");
        assert_eq!(records.len(), 2, "zone events concern no player");

        // A new session of a character no platform keeps: a new character.
        let again =
            event(7, 1, Kind::PlayerJoined(ev::PlayerJoined { name: String::new(), entity: 9, character: None }));
        fold(&mut records, &[&again]);
        let ada = &records[&7];
        assert_eq!((ada.name.as_str(), ada.level, ada.gold, ada.inventory.len(), ada.events), ("ada", 1, 0, 0, 10));
    }

    #[test]
    fn a_kept_character_goes_from_rest_to_a_claim_to_a_zone_and_back_to_rest() {
        let mut ada = PlayerRecord::new(7);
        assert_eq!(ada.claim("meadow", 1_000), Claim::Granted { incarnation: 1 });
        assert_eq!(ada.hold, Hold::Claimed { zone: "meadow".into(), at_ms: 1_000 });
        assert_eq!(ada.claim("meadow", 2_000), Claim::Granted { incarnation: 1 }, "asking again: the same stay");
        assert_eq!(ada.claim("forest", 3_000), Claim::Elsewhere { zone: "meadow".into() });

        assert!(ada.apply(&kept(7, 1, 1, joined(character(1, 30)))));
        assert_eq!(ada.hold, Hold::InZone { zone: "meadow".into() });
        assert_eq!((ada.level, ada.gold, ada.inventory_text().as_str()), (2, 30, "3:2"));
        assert!(ada.apply(&kept(7, 1, 1, Kind::GoldChanged(ev::GoldChanged { delta: 5, total: 35 }))));
        assert_eq!(ada.gold, 35);
        assert_eq!(ada.claim("meadow", 4_000), Claim::Granted { incarnation: 1 }, "a second sign-in takes it over");
        assert_eq!(ada.claim("forest", 4_000), Claim::Elsewhere { zone: "meadow".into() });

        assert!(ada.apply(&kept(7, 1, 1, left(character(1, 41)))));
        assert_eq!(
            (ada.hold.clone(), ada.gold, ada.place.clone(), ada.online),
            (Hold::AtRest, 41, Some(("meadow".into(), 500, 600)), false)
        );
        assert_eq!(ada.claim("forest", 5_000), Claim::Granted { incarnation: 2 }, "at rest: a new stay");
    }

    #[test]
    fn a_stale_writer_cannot_store_an_older_state_over_a_newer_one() {
        let mut records = BTreeMap::new();
        let mut ada = PlayerRecord::new(7);
        ada.claim("meadow", 0);
        records.insert(7, ada);
        let stay = [kept(7, 1, 1, joined(character(1, 30))), kept(7, 1, 1, left(character(1, 50)))];
        assert_eq!(fold(&mut records, &stay.iter().collect::<Vec<_>>()), 0);
        assert_eq!(records[&7].gold, 50);

        // The zone rolled back to before the player left: the same stay again, older.
        let replayed = [
            kept(7, 1, 1, joined(character(1, 30))),
            kept(7, 1, 1, Kind::GoldChanged(ev::GoldChanged { delta: 2, total: 32 })),
            kept(7, 1, 1, left(character(1, 32))),
            event(7, 1, Kind::PlayerJoined(ev::PlayerJoined { name: "ada".into(), entity: 1, character: None })),
        ];
        assert_eq!(fold(&mut records, &replayed.iter().collect::<Vec<_>>()), 4, "none taken");
        assert_eq!((records[&7].gold, records[&7].hold.clone()), (50, Hold::AtRest));

        // A newer stay elsewhere; the old one's late events change nothing.
        records.get_mut(&7).expect("ada").claim("forest", 10);
        fold(&mut records, &[&kept(7, 2, 2, joined(character(2, 50)))]);
        let late = kept(7, 1, 1, Kind::GoldChanged(ev::GoldChanged { delta: 9, total: 59 }));
        assert_eq!(fold(&mut records, &[&late]), 1);
        assert_eq!((records[&7].gold, records[&7].incarnation), (50, 2));
    }

    #[test]
    fn a_claim_whose_ticket_was_never_used_lapses() {
        let mut ada = PlayerRecord::new(7);
        ada.claim("meadow", 0);
        assert_eq!(ada.claim("forest", CLAIM_LAPSE_MS), Claim::Elsewhere { zone: "meadow".into() });
        assert_eq!(ada.claim("forest", CLAIM_LAPSE_MS + 1), Claim::Granted { incarnation: 2 });
        // The lapsed stay's join, if it ever comes, is refused.
        assert!(!ada.apply(&kept(7, 1, 1, joined(character(1, 30)))));
    }

    #[test]
    fn holds_round_trip_through_their_columns() {
        for hold in [Hold::AtRest, Hold::Claimed { zone: "z".into(), at_ms: 5 }, Hold::InZone { zone: "y".into() }] {
            let (code, zone, at) = hold.to_columns();
            assert_eq!(Hold::from_columns(code, zone.to_owned(), at), hold);
        }
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
