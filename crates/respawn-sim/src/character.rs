//! A character as it enters and leaves a zone: the durable part of a
//! player (level, XP, gold, inventory and where it last stood), and the
//! incarnation that orders its stays in zones.

use std::collections::BTreeMap;

use crate::geom::Point;
use crate::ids::ItemKind;

/// The durable part of a character. A zone takes one in with a join and
/// gives one back when the player leaves; the platform stores it between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Character {
    /// Which stay in a zone this is: every claim of the character by the
    /// platform starts a higher one, so a state from an older stay can be
    /// told from a newer one. 0: a character no platform keeps (it starts
    /// fresh every join, as on a zone server of its own).
    pub incarnation: u64,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    pub inventory: BTreeMap<ItemKind, u32>,
    /// The zone (by name) and position it was last in, or is travelling to.
    pub place: Option<(String, Point)>,
}

impl Character {
    /// A new level-1 character with nothing.
    pub fn fresh(incarnation: u64) -> Self {
        Self { incarnation, level: 1, xp: 0, gold: 0, inventory: BTreeMap::new(), place: None }
    }
}

impl Default for Character {
    fn default() -> Self {
        Self::fresh(0)
    }
}
