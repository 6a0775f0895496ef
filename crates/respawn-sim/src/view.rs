//! Area of interest and delta replication: what each client must be told.
//!
//! Once per tick a [`FieldIndex`] buckets every entity into a grid. Each
//! client's [`ClientView`] queries the cells around its player, keeps the
//! nearest entities up to a cap, and diffs them (sorted by id) against what
//! that client was last sent: entered, changed, left. The baseline only moves
//! on [`ClientView::commit`], so an update that was dropped for a slow client
//! is folded into the next one instead of being lost.

use crate::geom::Point;
use crate::grid::CellGrid;
use crate::ids::{EntityId, ItemKind};
use crate::zone::{Player, Zone};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Player,
    Npc,
    Item,
}

/// The replicated state of one entity.
///
/// Aligned to 16 bytes (32 in all, from 28): copied in whole 16-byte
/// halves, a `Changed` built and then read back is not stalled by loads
/// that straddle two earlier stores (half of `ClientView::diff`'s time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(16))]
pub struct EntityState {
    pub id: EntityId,
    pub kind: EntityKind,
    pub pos: Point,
    /// 0 for items and for the dead.
    pub hp: i32,
    pub max_hp: i32,
    pub level: u32,
    pub item: Option<ItemKind>,
}

impl EntityState {
    /// Whether anything a client renders differs (kind and item never change).
    fn differs(&self, other: &EntityState) -> bool {
        self.pos != other.pos || self.hp != other.hp || self.max_hp != other.max_hp || self.level != other.level
    }
}

/// Low bits of a nearest-first key hold the entity's rank, the bits above
/// its squared distance: a distance within the largest view radius
/// (100,000 cm, under 2^34 cm²) and a rank under 2^30 fit in 64 bits.
/// Farther distances (a radius past what a zone's config allows) saturate
/// and tie, broken by the lower id.
const RANK_BITS: u32 = 30;
const RANK_MASK: u64 = (1 << RANK_BITS) - 1;
/// Past this many words of bitset per entity a client keeps, its visible
/// ranks are sorted instead (a huge zone's bitset would cost more to clear
/// and scan than sorting what one client sees).
const BITSET_WORDS_PER_VISIBLE: usize = 8;

/// Every entity of a zone, rebuilt once per tick: their states sorted by
/// id (an entity's *rank* is its place there), and their ranks in a grid.
///
/// Clients' views work on ranks: numbers that sort like the ids, small
/// enough to set in a bitset, and 12 bytes a grid entry instead of a state.
#[derive(Debug, Default)]
pub struct FieldIndex {
    by_rank: Vec<EntityState>,
    grid: CellGrid<u32>,
}

impl FieldIndex {
    /// Rebuilds the index from `zone`, reusing its allocations.
    pub fn rebuild(&mut self, zone: &Zone, cell: i32) {
        let players = zone.players().values().map(|p| EntityState {
            id: p.entity,
            kind: EntityKind::Player,
            pos: p.pos,
            hp: p.hp,
            max_hp: p.max_hp(),
            level: p.level,
            item: None,
        });
        let npcs = zone.npcs().values().map(|n| EntityState {
            id: n.entity,
            kind: EntityKind::Npc,
            pos: n.pos,
            hp: if n.respawn_at.is_some() { 0 } else { n.hp },
            max_hp: crate::zone::NPC_HP,
            level: 1,
            item: None,
        });
        let items = zone.items().values().map(|i| EntityState {
            id: i.entity,
            kind: EntityKind::Item,
            pos: i.pos,
            hp: 0,
            max_hp: 0,
            level: 0,
            item: Some(i.kind),
        });
        self.by_rank.clear();
        self.by_rank.extend(players.chain(npcs).chain(items));
        self.by_rank.sort_unstable_by_key(|e| e.id);
        // A rank past the key's bits would need more entities than memory holds.
        debug_assert!(self.by_rank.len() as u64 <= RANK_MASK);
        let config = zone.config();
        let ranked = self.by_rank.iter().enumerate().map(|(rank, e)| (e.pos, rank as u32));
        self.grid.rebuild(config.width, config.height, cell, ranked);
    }

    /// Appends the nearest-first key of every entity within `radius` of `center` to `out`.
    fn near(&self, center: Point, radius: i32, out: &mut Vec<u64>) {
        self.grid.for_each_within(center, radius, |p, rank| {
            let dist2 = p.dist2(center).unsigned_abs().min(u64::MAX >> RANK_BITS);
            out.push(dist2 << RANK_BITS | u64::from(*rank));
        });
    }
}

/// A player's own figures, sent whenever they change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelfStats {
    pub hp: i32,
    pub max_hp: i32,
    pub level: u32,
    pub xp: u64,
    pub gold: u64,
    pub inventory: Vec<(ItemKind, u32)>,
    pub respawn_at: Option<u64>,
}

impl SelfStats {
    pub fn of(p: &Player) -> Self {
        SelfStats {
            hp: p.hp,
            max_hp: p.max_hp(),
            level: p.level,
            xp: p.xp,
            gold: p.gold,
            inventory: p.inventory.iter().map(|(k, v)| (*k, *v)).collect(),
            respawn_at: p.respawn_at,
        }
    }

    /// Whether these are `p`'s figures now (checked every tick for every
    /// client, so without building a new `SelfStats`).
    fn are_of(&self, p: &Player) -> bool {
        self.hp == p.hp
            && self.max_hp == p.max_hp()
            && self.level == p.level
            && self.xp == p.xp
            && self.gold == p.gold
            && self.respawn_at == p.respawn_at
            && self.inventory.iter().copied().eq(p.inventory.iter().map(|(k, v)| (*k, *v)))
    }
}

/// A visible entity that changed since the client's last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub state: EntityState,
    /// What the client was last sent of it.
    pub before: EntityState,
}

impl Changed {
    /// Whether level or max HP changed too (they rarely do; position and HP often).
    pub fn stats(&self) -> bool {
        self.state.level != self.before.level || self.state.max_hp != self.before.max_hp
    }

    /// Whether its position is all that changed (most changes).
    pub fn only_moved(&self) -> bool {
        self.state.hp == self.before.hp && !self.stats()
    }
}

/// The difference between what a client was last sent and what it sees now.
///
/// One is kept per replicating thread and refilled for each client in turn,
/// so the lists stay in that thread's cache instead of one set per client.
#[derive(Debug, Default)]
pub struct Delta {
    pub entered: Vec<EntityState>,
    pub changed: Vec<Changed>,
    pub left: Vec<EntityId>,
    pub stats: Option<SelfStats>,
    /// What the client sees now, sorted by id: its next baseline.
    visible: Vec<EntityState>,
    /// What is within the radius as nearest-first keys (`dist² << 30 |
    /// rank`), then the nearest `max_visible` of them.
    near: Vec<u64>,
    /// The kept ranks as bits, read back in ascending order.
    ranks: Vec<u64>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty() && self.changed.is_empty() && self.left.is_empty() && self.stats.is_none()
    }
}

/// One client's replication baseline.
#[derive(Debug)]
pub struct ClientView {
    max_visible: usize,
    /// What the client was last sent, sorted by id.
    known: Vec<EntityState>,
    known_stats: Option<SelfStats>,
}

impl ClientView {
    pub fn new(max_visible: usize) -> Self {
        Self { max_visible: max_visible.max(1), known: Vec::new(), known_stats: None }
    }

    /// Computes into `d` what `player` must be told this tick.
    pub fn diff(&self, index: &FieldIndex, player: &Player, radius: i32, d: &mut Delta) {
        // The baseline (4 KB at 128 visible) is cold after a tick's wait:
        // reading it in one independent sweep has its cache lines load side
        // by side while the grid is searched; the merge below would wait
        // for them one at a time.
        std::hint::black_box(self.known.iter().fold(0, |ids, k| ids ^ k.id));
        let near = &mut d.near;
        near.clear();
        index.near(player.pos, radius, near);
        if near.len() > self.max_visible {
            // The nearest, ties to the lower id (the lower rank).
            near.select_nth_unstable(self.max_visible - 1);
            near.truncate(self.max_visible);
        }
        // In id order, which is rank order.
        let visible = &mut d.visible;
        visible.clear();
        let words = index.by_rank.len().div_ceil(64);
        if words <= near.len() * BITSET_WORDS_PER_VISIBLE {
            let ranks = &mut d.ranks;
            ranks.clear();
            ranks.resize(words, 0);
            for key in near.iter() {
                let rank = (key & RANK_MASK) as usize;
                ranks[rank / 64] |= 1 << (rank % 64);
            }
            for (word, bits) in ranks.iter().enumerate() {
                let mut bits = *bits;
                while bits != 0 {
                    visible.push(index.by_rank[word * 64 + bits.trailing_zeros() as usize]);
                    bits &= bits - 1;
                }
            }
        } else {
            for key in near.iter_mut() {
                *key &= RANK_MASK;
            }
            near.sort_unstable();
            visible.extend(near.iter().map(|rank| index.by_rank[*rank as usize]));
        }

        d.entered.clear();
        d.changed.clear();
        d.left.clear();
        let (mut i, mut j) = (0, 0);
        while i < self.known.len() || j < visible.len() {
            match (self.known.get(i), visible.get(j)) {
                (Some(k), Some(v)) if k.id == v.id => {
                    if v.differs(k) {
                        d.changed.push(Changed { state: *v, before: *k });
                    }
                    i += 1;
                    j += 1;
                }
                (Some(k), Some(v)) if k.id < v.id => {
                    d.left.push(k.id);
                    i += 1;
                }
                (Some(_), Some(v)) | (None, Some(v)) => {
                    d.entered.push(*v);
                    j += 1;
                }
                (Some(k), None) => {
                    d.left.push(k.id);
                    i += 1;
                }
                (None, None) => break,
            }
        }
        let unchanged = self.known_stats.as_ref().is_some_and(|known| known.are_of(player));
        d.stats = (!unchanged).then(|| SelfStats::of(player));
    }

    /// Records that `delta`, the last computed for this client, reached it
    /// (its visible list becomes this baseline, and the old one the
    /// delta's to refill: a swap, not a copy of every visible entity).
    pub fn commit(&mut self, delta: &mut Delta) {
        std::mem::swap(&mut self.known, &mut delta.visible);
        if let Some(stats) = delta.stats.take() {
            self.known_stats = Some(stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, CommandKind, ZoneConfig};

    fn zone_with(players: &[(u64, &str)]) -> Zone {
        let mut config = ZoneConfig::standard(1, "v", 5);
        config.npc_count = 0;
        config.max_items = 0;
        let mut z = Zone::new(config).expect("zone");
        let cmds: Vec<Command> =
            players.iter().map(|(id, n)| Command { player: *id, seq: 0, kind: CommandKind::join_fresh(*n) }).collect();
        z.tick(&cmds);
        z
    }

    #[test]
    fn first_view_enters_then_only_changes_are_sent() {
        let mut z = zone_with(&[(1, "a")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 2_000);
        let mut view = ClientView::new(64);
        let mut d = Delta::default();
        let me = z.player(1).expect("joined").clone();
        view.diff(&index, &me, 2_000, &mut d);
        assert_eq!(d.entered.len(), 1);
        assert!(d.stats.is_some());
        view.commit(&mut d);

        z.tick(&[]);
        index.rebuild(&z, 2_000);
        let me = z.player(1).expect("joined").clone();
        view.diff(&index, &me, 2_000, &mut d);
        assert!(d.is_empty(), "nothing moved");

        z.tick(&[Command { player: 1, seq: 1, kind: CommandKind::Move { velocity: crate::Point::new(10, 0) } }]);
        index.rebuild(&z, 2_000);
        let me = z.player(1).expect("joined").clone();
        view.diff(&index, &me, 2_000, &mut d);
        assert_eq!(d.changed.len(), 1);
        assert!(d.entered.is_empty() && d.left.is_empty());
    }

    #[test]
    fn uncommitted_delta_is_resent() {
        let z = zone_with(&[(1, "a"), (2, "b")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 50_000);
        let mut view = ClientView::new(64);
        let mut d = Delta::default();
        let me = z.player(1).expect("joined").clone();
        view.diff(&index, &me, 50_000, &mut d);
        let first = d.entered.len();
        // Not committed (dropped): the next diff still carries everything.
        view.diff(&index, &me, 50_000, &mut d);
        assert_eq!(d.entered.len(), first);
        view.commit(&mut d);
        view.diff(&index, &me, 50_000, &mut d);
        assert!(d.is_empty());
    }

    #[test]
    fn own_figures_are_sent_again_only_when_one_changes() {
        let z = zone_with(&[(1, "a")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 2_000);
        let mut view = ClientView::new(64);
        let mut d = Delta::default();
        let mut me = z.player(1).expect("joined").clone();
        view.diff(&index, &me, 2_000, &mut d);
        view.commit(&mut d);
        view.diff(&index, &me, 2_000, &mut d);
        assert!(d.stats.is_none(), "nothing of the player's changed");
        me.gold += 5;
        view.diff(&index, &me, 2_000, &mut d);
        assert_eq!(d.stats.as_ref().map(|s| s.gold), Some(me.gold));
        view.commit(&mut d);
        *me.inventory.entry(ItemKind::Potion).or_default() += 1;
        view.diff(&index, &me, 2_000, &mut d);
        assert_eq!(d.stats.as_ref().map(|s| s.inventory.clone()), Some(vec![(ItemKind::Potion, 1)]));
    }

    #[test]
    fn far_entities_are_not_visible_and_cap_keeps_nearest() {
        let z = zone_with(&[(1, "a"), (2, "b"), (3, "c")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 1_000);
        let me = z.player(1).expect("joined").clone();
        let mut everyone = Vec::new();
        index.near(me.pos, 100_000, &mut everyone);
        assert_eq!(everyone.len(), 3);
        let mut only_me = Vec::new();
        index.near(me.pos, 0, &mut only_me);
        assert_eq!(only_me.len(), 1);
        let view = ClientView::new(1);
        let mut d = Delta::default();
        view.diff(&index, &me, 100_000, &mut d);
        assert_eq!(d.entered.len(), 1);
        assert_eq!(d.entered[0].id, me.entity, "the nearest is the player itself");
    }

    /// What a client must see, the slow and obvious way: everything within
    /// the radius, the nearest `cap` (ties to the lower id), sorted by id.
    fn seen_by_brute_force(z: &Zone, center: Point, radius: i32, cap: usize) -> Vec<EntityId> {
        let positions = z.players().values().map(|p| (p.entity, p.pos));
        let positions = positions.chain(z.npcs().values().map(|n| (n.entity, n.pos)));
        let positions = positions.chain(z.items().values().map(|i| (i.entity, i.pos)));
        let mut within: Vec<(i64, EntityId)> = positions
            .map(|(id, pos)| (pos.dist2(center), id))
            .filter(|(d2, _)| *d2 <= i64::from(radius).pow(2))
            .collect();
        within.sort();
        let mut kept: Vec<EntityId> = within.iter().take(cap).map(|(_, id)| *id).collect();
        kept.sort();
        kept
    }

    #[test]
    fn a_view_holds_the_nearest_within_the_radius_sorted_by_id_however_its_ranks_are_ordered() {
        // Many players on a big field, many of them at equal distances (on a
        // coarse lattice): ties, crowds past the cap, and lone players whose
        // few ranks are sorted rather than set in a bitset of the whole zone.
        let names: Vec<(u64, String)> = (1..=2_000).map(|i| (i, format!("p{i}"))).collect();
        let named: Vec<(u64, &str)> = names.iter().map(|(i, n)| (*i, n.as_str())).collect();
        let mut z = zone_with(&named);
        let mut rng = crate::rng::Rng::new(7);
        for (i, p) in z.players.values_mut().enumerate() {
            // Half crowd a corner 1 m apart, half are scattered 10 m apart.
            let (lattice, cells) = if i % 2 == 0 { (100, 30) } else { (1_000, 20) };
            p.pos = Point::new(rng.below(cells) as i32 * lattice, rng.below(cells) as i32 * lattice);
        }
        let (radius, cap) = (500, 24);
        let mut index = FieldIndex::default();
        index.rebuild(&z, radius / 2);
        let words = index.by_rank.len().div_ceil(64);
        let (mut bitset, mut sorted) = (0, 0);
        let mut d = Delta::default();
        for me in z.players().values() {
            let view = ClientView::new(cap);
            view.diff(&index, me, radius, &mut d);
            let seen: Vec<EntityId> = d.entered.iter().map(|e| e.id).collect();
            assert_eq!(seen, seen_by_brute_force(&z, me.pos, radius, cap), "seen by player {}", me.id);
            match words <= seen.len() * BITSET_WORDS_PER_VISIBLE {
                true => bitset += 1,
                false => sorted += 1,
            }
        }
        assert!(bitset > 100 && sorted > 100, "both ways of ordering ranks ran ({bitset} and {sorted})");
    }

    #[test]
    fn a_crowd_moving_among_npcs_and_items_sees_what_brute_force_sees_tick_after_tick() {
        let mut z = Zone::new(ZoneConfig::standard(1, "v", 11)).expect("zone");
        let joins: Vec<Command> = (1..=400)
            .map(|id| Command { player: id, seq: 0, kind: CommandKind::join_fresh(format!("p{id}")) })
            .collect();
        z.tick(&joins);
        let mut rng = crate::rng::Rng::new(3);
        for p in z.players.values_mut() {
            // A 60 m square: far more than 128 within 20 m of most players.
            p.pos = Point::new(5_000 + rng.below(6_000) as i32, 5_000 + rng.below(6_000) as i32);
        }
        let (radius, cap) = (2_000, 128);
        let mut views: std::collections::BTreeMap<u64, ClientView> =
            z.players().keys().map(|id| (*id, ClientView::new(cap))).collect();
        let (mut index, mut d) = (FieldIndex::default(), Delta::default());
        for tick in 0..10u32 {
            let moves: Vec<Command> = (1..=400)
                .map(|id| {
                    let velocity = Point::new(rng.below(600) as i32 - 300, rng.below(600) as i32 - 300);
                    Command { player: id, seq: tick + 1, kind: CommandKind::Move { velocity } }
                })
                .collect();
            z.tick(&moves);
            index.rebuild(&z, radius / 2);
            for (id, view) in views.iter_mut() {
                let me = z.player(*id).expect("still here");
                view.diff(&index, me, radius, &mut d);
                let seen: Vec<EntityId> = d.visible.iter().map(|e| e.id).collect();
                assert_eq!(seen, seen_by_brute_force(&z, me.pos, radius, cap), "player {id} at tick {tick}");
                view.commit(&mut d);
            }
        }
    }
}
