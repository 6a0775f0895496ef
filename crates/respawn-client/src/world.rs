//! A client's picture of the zone, built from `Welcome` and `StateUpdate`s.

use std::collections::BTreeMap;

use respawn_proto::{EntityKind, EntityState, PlayerStats, StateUpdate, Welcome};
use respawn_sim::Point;

#[derive(Debug, Default)]
pub struct World {
    pub welcome: Option<Welcome>,
    pub entities: BTreeMap<u32, EntityState>,
    pub stats: Option<PlayerStats>,
    pub tick: u64,
}

impl World {
    pub fn reset(&mut self, welcome: Welcome) {
        self.entities.clear();
        self.stats = None;
        self.tick = welcome.tick;
        self.welcome = Some(welcome);
    }

    pub fn apply(&mut self, update: StateUpdate) {
        self.tick = update.tick;
        for e in update.entered {
            self.entities.insert(e.id, e);
        }
        for c in update.changed {
            if let Some(e) = self.entities.get_mut(&c.id) {
                e.x = c.x;
                e.y = c.y;
                e.hp = c.hp;
                // 0 means unchanged for these two.
                if c.max_hp != 0 {
                    e.max_hp = c.max_hp;
                }
                if c.level != 0 {
                    e.level = c.level;
                }
            }
        }
        for id in update.left {
            self.entities.remove(&id);
        }
        if let Some(stats) = update.you {
            self.stats = Some(stats);
        }
    }

    pub fn me(&self) -> Option<&EntityState> {
        self.welcome.as_ref().and_then(|w| self.entities.get(&w.entity_id))
    }

    pub fn is_dead(&self) -> bool {
        self.stats.as_ref().is_some_and(|s| s.dead)
    }

    /// The nearest visible entity of `kind` that `keep` accepts, with its squared distance.
    pub fn nearest(
        &self,
        from: Point,
        kind: EntityKind,
        keep: impl Fn(&EntityState) -> bool,
    ) -> Option<(&EntityState, i64)> {
        let me = self.welcome.as_ref().map(|w| w.entity_id);
        self.entities
            .values()
            .filter(|e| e.kind == kind as i32 && Some(e.id) != me && keep(e))
            .map(|e| (e, Point::new(e.x, e.y).dist2(from)))
            .min_by_key(|(e, d)| (*d, e.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_build_the_picture() {
        let mut w = World::default();
        w.reset(Welcome { entity_id: 1, ..Default::default() });
        let ent =
            |id, kind: EntityKind, x| EntityState { id, kind: kind as i32, x, y: 0, hp: 10, ..Default::default() };
        w.apply(StateUpdate {
            tick: 5,
            entered: vec![ent(1, EntityKind::Player, 0), ent(2, EntityKind::Npc, 100), ent(3, EntityKind::Npc, 50)],
            ..Default::default()
        });
        assert_eq!(w.me().map(|e| e.x), Some(0));
        assert_eq!(w.nearest(Point::new(0, 0), EntityKind::Npc, |_| true).map(|(e, _)| e.id), Some(3));
        w.apply(StateUpdate {
            tick: 6,
            changed: vec![ent(1, EntityKind::Unspecified, 7)],
            left: vec![3],
            ..Default::default()
        });
        assert_eq!(w.me().map(|e| (e.x, e.kind)), Some((7, EntityKind::Player as i32)));
        assert_eq!(w.nearest(Point::new(0, 0), EntityKind::Npc, |_| true).map(|(e, _)| e.id), Some(2));
        assert_eq!(w.tick, 6);
    }
}
