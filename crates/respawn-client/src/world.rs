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

    /// Applies one update; moves that cannot be read, or of an entity never
    /// entered, are the server's error (the picture would be wrong from then on).
    pub fn apply(&mut self, update: StateUpdate) -> anyhow::Result<()> {
        let moves = update.moves()?;
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
        for m in moves {
            let e = self
                .entities
                .get_mut(&m.id)
                .ok_or_else(|| anyhow::anyhow!("entity {} moved but never entered", m.id))?;
            e.x = e.x.saturating_add(m.dx);
            e.y = e.y.saturating_add(m.dy);
        }
        for id in update.left {
            self.entities.remove(&id);
        }
        if let Some(stats) = update.you {
            self.stats = Some(stats);
        }
        Ok(())
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
        })
        .expect("applies");
        assert_eq!(w.me().map(|e| e.x), Some(0));
        assert_eq!(w.nearest(Point::new(0, 0), EntityKind::Npc, |_| true).map(|(e, _)| e.id), Some(3));
        w.apply(StateUpdate {
            tick: 6,
            changed: vec![ent(1, EntityKind::Unspecified, 7)],
            left: vec![3],
            ..Default::default()
        })
        .expect("applies");
        assert_eq!(w.me().map(|e| (e.x, e.kind)), Some((7, EntityKind::Player as i32)));
        assert_eq!(w.nearest(Point::new(0, 0), EntityKind::Npc, |_| true).map(|(e, _)| e.id), Some(2));
        assert_eq!(w.tick, 6);
        // Protocol 2: ids 1 and 2 moved (gaps 1, 1), by (5, -3) and (-20, 0).
        w.apply(StateUpdate { tick: 7, moved_ids: vec![1, 1], moved_steps: vec![5, -3, -20, 0], ..Default::default() })
            .expect("applies");
        let at = |id| w.entities.get(&id).map(|e| (e.x, e.y));
        assert_eq!((at(1), at(2)), (Some((12, -3)), Some((80, 0))));
    }

    #[test]
    fn unreadable_moves_and_moves_of_unknown_entities_are_errors() {
        let mut w = World::default();
        w.reset(Welcome { entity_id: 1, ..Default::default() });
        let odd = StateUpdate { moved_ids: vec![1], moved_steps: vec![5], ..Default::default() };
        assert!(w.apply(odd).is_err());
        let unknown = StateUpdate { moved_ids: vec![9], moved_steps: vec![1, 1], ..Default::default() };
        let error = w.apply(unknown).expect_err("9 never entered").to_string();
        assert!(error.contains("entity 9 moved but never entered"), "{error}");
    }
}
