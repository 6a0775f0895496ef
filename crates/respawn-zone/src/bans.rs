//! The ban list a zone server enforces: the platform server owns it and
//! hands it over with heartbeat replies whenever its version changes. A
//! banned player's join is refused; one already playing is kicked.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::server::ServerState;
use crate::zone_loop::Control;

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
    fn replace(&self, version: u64, players: HashSet<u64>) -> Vec<u64> {
        let Ok(mut inner) = self.inner.write() else { return Vec::new() };
        let added = players.difference(&inner.1).copied().collect();
        *inner = (version, players);
        added
    }
}

/// Applies ban lists to a running server.
#[derive(Debug, Clone)]
pub struct BanEnforcer {
    pub(crate) state: Arc<ServerState>,
}

impl BanEnforcer {
    pub fn version(&self) -> u64 {
        self.state.bans.version()
    }

    /// Installs the list and kicks every newly banned player still connected.
    pub fn apply(&self, version: u64, players: impl IntoIterator<Item = u64>) {
        let added = self.state.bans.replace(version, players.into_iter().collect());
        for player in &added {
            for zone in self.state.zone_handles() {
                let _ = zone.control.send(Control::Kick { player: *player, reason: "banned".into() });
            }
        }
        tracing::info!(version, newly_banned = added.len(), "ban list applied");
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
