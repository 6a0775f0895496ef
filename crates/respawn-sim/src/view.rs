//! Area of interest and delta replication: what each client must be told.
//!
//! Once per tick a [`FieldIndex`] buckets every entity into a grid. Each
//! client's [`ClientView`] queries the cells around its player, keeps the
//! nearest entities up to a cap, and diffs them (sorted by id) against what
//! that client was last sent: entered, changed, left. The baseline only moves
//! on [`ClientView::commit`], so an update that was dropped for a slow client
//! is folded into the next one instead of being lost.

use crate::geom::Point;
use crate::zone::{EntityId, ItemKind, Player, Zone};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Player,
    Npc,
    Item,
}

/// The replicated state of one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Every entity of a zone bucketed into square cells (counting sort).
#[derive(Debug, Default)]
pub struct FieldIndex {
    cell: i32,
    cols: i32,
    rows: i32,
    /// `cell_start[c]..cell_start[c+1]` indexes `entities` for cell `c`.
    cell_start: Vec<u32>,
    entities: Vec<EntityState>,
    scratch: Vec<(u32, EntityState)>,
}

impl FieldIndex {
    /// Rebuilds the index from `zone`, reusing its allocations.
    pub fn rebuild(&mut self, zone: &Zone, cell: i32) {
        let config = zone.config();
        self.cell = cell.max(100);
        self.cols = config.width / self.cell + 1;
        self.rows = config.height / self.cell + 1;
        let cells = (self.cols * self.rows) as usize;
        self.scratch.clear();
        for p in zone.players().values() {
            let s = EntityState {
                id: p.entity,
                kind: EntityKind::Player,
                pos: p.pos,
                hp: p.hp,
                max_hp: p.max_hp(),
                level: p.level,
                item: None,
            };
            self.scratch.push((self.cell_of(p.pos), s));
        }
        for n in zone.npcs().values() {
            let hp = if n.respawn_at.is_some() { 0 } else { n.hp };
            let s = EntityState {
                id: n.entity,
                kind: EntityKind::Npc,
                pos: n.pos,
                hp,
                max_hp: crate::zone::NPC_HP,
                level: 1,
                item: None,
            };
            self.scratch.push((self.cell_of(n.pos), s));
        }
        for i in zone.items().values() {
            let s = EntityState {
                id: i.entity,
                kind: EntityKind::Item,
                pos: i.pos,
                hp: 0,
                max_hp: 0,
                level: 0,
                item: Some(i.kind),
            };
            self.scratch.push((self.cell_of(i.pos), s));
        }
        self.cell_start.clear();
        self.cell_start.resize(cells + 1, 0);
        for (c, _) in &self.scratch {
            self.cell_start[*c as usize + 1] += 1;
        }
        for c in 0..cells {
            self.cell_start[c + 1] += self.cell_start[c];
        }
        let mut fill = self.cell_start.clone();
        self.entities.clear();
        self.entities.resize(
            self.scratch.len(),
            EntityState {
                id: 0,
                kind: EntityKind::Item,
                pos: Point::default(),
                hp: 0,
                max_hp: 0,
                level: 0,
                item: None,
            },
        );
        for (c, s) in &self.scratch {
            let slot = &mut fill[*c as usize];
            self.entities[*slot as usize] = *s;
            *slot += 1;
        }
    }

    fn cell_of(&self, p: Point) -> u32 {
        let cx = (p.x / self.cell).clamp(0, self.cols - 1);
        let cy = (p.y / self.cell).clamp(0, self.rows - 1);
        (cy * self.cols + cx) as u32
    }

    /// Appends every entity within `radius` of `center` to `out`.
    pub fn query(&self, center: Point, radius: i32, out: &mut Vec<EntityState>) {
        if self.cols == 0 {
            return;
        }
        let r2 = i64::from(radius) * i64::from(radius);
        let x0 = ((center.x - radius) / self.cell).clamp(0, self.cols - 1);
        let x1 = ((center.x + radius) / self.cell).clamp(0, self.cols - 1);
        let y0 = ((center.y - radius) / self.cell).clamp(0, self.rows - 1);
        let y1 = ((center.y + radius) / self.cell).clamp(0, self.rows - 1);
        for cy in y0..=y1 {
            let row = (cy * self.cols) as usize;
            let (start, end) = (self.cell_start[row + x0 as usize], self.cell_start[row + x1 as usize + 1]);
            out.extend(self.entities[start as usize..end as usize].iter().filter(|e| e.pos.dist2(center) <= r2));
        }
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
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
}

/// The difference between what a client was last sent and what it sees now.
#[derive(Debug, Default)]
pub struct Delta {
    pub entered: Vec<EntityState>,
    pub changed: Vec<EntityState>,
    pub left: Vec<EntityId>,
    pub stats: Option<SelfStats>,
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
    visible: Vec<EntityState>,
    delta: Delta,
}

impl ClientView {
    pub fn new(max_visible: usize) -> Self {
        Self {
            max_visible: max_visible.max(1),
            known: Vec::new(),
            known_stats: None,
            visible: Vec::new(),
            delta: Delta::default(),
        }
    }

    /// Computes what `player` must be told this tick; read it with [`Self::delta`].
    pub fn diff(&mut self, index: &FieldIndex, player: &Player, radius: i32) -> &Delta {
        let center = player.pos;
        self.visible.clear();
        index.query(center, radius, &mut self.visible);
        if self.visible.len() > self.max_visible {
            let cap = self.max_visible;
            self.visible.select_nth_unstable_by_key(cap - 1, |e| (e.pos.dist2(center), e.id));
            self.visible.truncate(cap);
        }
        self.visible.sort_unstable_by_key(|e| e.id);

        let d = &mut self.delta;
        d.entered.clear();
        d.changed.clear();
        d.left.clear();
        let (mut i, mut j) = (0, 0);
        while i < self.known.len() || j < self.visible.len() {
            match (self.known.get(i), self.visible.get(j)) {
                (Some(k), Some(v)) if k.id == v.id => {
                    if v.differs(k) {
                        d.changed.push(*v);
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
        let stats = SelfStats::of(player);
        d.stats = (self.known_stats.as_ref() != Some(&stats)).then_some(stats);
        &self.delta
    }

    pub fn delta(&self) -> &Delta {
        &self.delta
    }

    /// Records that the last computed delta reached the client.
    pub fn commit(&mut self) {
        std::mem::swap(&mut self.known, &mut self.visible);
        if let Some(stats) = self.delta.stats.take() {
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
        let cmds: Vec<Command> = players
            .iter()
            .map(|(id, n)| Command { player: *id, seq: 0, kind: CommandKind::Join { name: (*n).into() } })
            .collect();
        z.tick(&cmds);
        z
    }

    #[test]
    fn first_view_enters_then_only_changes_are_sent() {
        let mut z = zone_with(&[(1, "a")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 2_000);
        let mut view = ClientView::new(64);
        let me = z.player(1).expect("joined").clone();
        let d = view.diff(&index, &me, 2_000);
        assert_eq!(d.entered.len(), 1);
        assert!(d.stats.is_some());
        view.commit();

        z.tick(&[]);
        index.rebuild(&z, 2_000);
        let me = z.player(1).expect("joined").clone();
        assert!(view.diff(&index, &me, 2_000).is_empty(), "nothing moved");

        z.tick(&[Command { player: 1, seq: 1, kind: CommandKind::Move { velocity: crate::Point::new(10, 0) } }]);
        index.rebuild(&z, 2_000);
        let me = z.player(1).expect("joined").clone();
        let d = view.diff(&index, &me, 2_000);
        assert_eq!(d.changed.len(), 1);
        assert!(d.entered.is_empty() && d.left.is_empty());
    }

    #[test]
    fn uncommitted_delta_is_resent() {
        let z = zone_with(&[(1, "a"), (2, "b")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 50_000);
        let mut view = ClientView::new(64);
        let me = z.player(1).expect("joined").clone();
        let first = view.diff(&index, &me, 50_000).entered.len();
        // Not committed (dropped): the next diff still carries everything.
        assert_eq!(view.diff(&index, &me, 50_000).entered.len(), first);
        view.commit();
        assert!(view.diff(&index, &me, 50_000).is_empty());
    }

    #[test]
    fn far_entities_are_not_visible_and_cap_keeps_nearest() {
        let z = zone_with(&[(1, "a"), (2, "b"), (3, "c")]);
        let mut index = FieldIndex::default();
        index.rebuild(&z, 1_000);
        let me = z.player(1).expect("joined").clone();
        let mut everyone = Vec::new();
        index.query(me.pos, 100_000, &mut everyone);
        assert_eq!(everyone.len(), 3);
        let mut only_me = Vec::new();
        index.query(me.pos, 0, &mut only_me);
        assert_eq!(only_me.len(), 1);
        let mut view = ClientView::new(1);
        let d = view.diff(&index, &me, 100_000);
        assert_eq!(d.entered.len(), 1);
        assert_eq!(d.entered[0].id, me.entity, "the nearest is the player itself");
    }
}
