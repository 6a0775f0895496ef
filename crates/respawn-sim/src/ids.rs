//! What the simulation names things by: players, entities on the field, and
//! the kinds of item (with the stable codes snapshots and the protocol use).
//! A module of its own so commands, events and the zone share them without
//! importing each other.

/// A player's account id (from the session token); stable across zones.
pub type PlayerId = u64;
/// An id of something on the field, unique within a zone's lifetime.
pub type EntityId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKind {
    Gold,
    Potion,
    Gem,
    Scroll,
}

impl ItemKind {
    pub const ALL: [ItemKind; 4] = [ItemKind::Gold, ItemKind::Potion, ItemKind::Gem, ItemKind::Scroll];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Gold => "gold",
            ItemKind::Potion => "potion",
            ItemKind::Gem => "gem",
            ItemKind::Scroll => "scroll",
        }
    }

    /// Stable numeric code used by snapshots and the wire protocol.
    pub fn code(self) -> u8 {
        match self {
            ItemKind::Gold => 1,
            ItemKind::Potion => 2,
            ItemKind::Gem => 3,
            ItemKind::Scroll => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}
