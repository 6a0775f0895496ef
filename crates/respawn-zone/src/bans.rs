//! The ban list a zone server enforces: the platform server owns it and
//! hands it over with heartbeat replies whenever its version changes. A
//! banned player's join is refused; one already playing is kicked
//! (`server::BanEnforcer`).

use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct BanList {
    inner: RwLock<(u64, HashSet<u64>)>,
}

impl BanList {
    /// The version last applied (0 before the first).
    pub fn version(&self) -> u64 {
        self.inner.read().map_or(0, |b| b.0)
    }

    pub fn contains(&self, player: u64) -> bool {
        self.inner.read().is_ok_and(|b| b.1.contains(&player))
    }

    /// Replaces the list; returns the players newly banned.
    pub(crate) fn replace(&self, version: u64, players: HashSet<u64>) -> Vec<u64> {
        let Ok(mut inner) = self.inner.write() else { return Vec::new() };
        let added = players.difference(&inner.1).copied().collect();
        *inner = (version, players);
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_reports_only_new_bans() {
        let bans = BanList::default();
        let mut first = bans.replace(1, [1, 2].into());
        first.sort_unstable();
        assert_eq!(first, vec![1, 2]);
        assert_eq!(bans.replace(2, [2, 3].into()), vec![3]);
        assert!(bans.contains(2) && !bans.contains(1));
        assert_eq!(bans.version(), 2);
    }
}
