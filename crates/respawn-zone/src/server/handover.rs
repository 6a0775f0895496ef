//! Moving a zone between servers, this server's half: release (the last
//! tick stored, then no more ticks), adopt (restore and start, refusing
//! anything older than the released tick), redirect (clients sent to the
//! new owner, the zone leaves), resume (a released zone ticks again). One at
//! a time per server; refusals are a [`HandoverError`], which only the admin
//! handlers turn into an HTTP status.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use respawn_api::admin::{Adopted, Redirected, Released, Resumed};

use super::state::ServerState;
use crate::lease::Taken;
use crate::persist::{self, PersistState};
use crate::zone_loop::Control;

/// Why a hand-over call (adopt, release, redirect, resume) was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("zone {0:?} is already hosted here")]
    AlreadyHosted(String),
    #[error("zone {0:?} is not in this server's configuration")]
    NotConfigured(String),
    #[error("no zone {0:?} here")]
    NotHere(String),
    /// No stored state of the zone this server can use.
    #[error("{0}")]
    Unrestorable(String),
    #[error(
        "cannot resume zone {zone:?} at tick {expected}: the newest state this server can read is tick {found} \
         (refused: {refused})"
    )]
    Stale { zone: String, expected: u64, found: u64, refused: String },
    #[error("{0}")]
    StartFailed(String),
    /// The zone's last tick could not be made durable; it ticks on.
    #[error("{0}")]
    NotStored(String),
    #[error("zone {0:?} is not released; release it first")]
    NotReleased(String),
    #[error("zone {0:?} stopped")]
    Gone(String),
    #[error("zone {zone:?} is run by server {owner:?}, which keeps renewing its lease")]
    LeasedByOther { zone: String, owner: String },
    /// The zone's lease could not be taken back: it stays parked, or stops if another server has it.
    #[error("{0}")]
    NotResumed(String),
}

fn gone(zone: &str) -> HandoverError {
    HandoverError::Gone(zone.to_owned())
}

impl ServerState {
    /// Restores the zone from the stores and starts it here. With
    /// `after_tick`, a zone handed over at that tick: anything older (the
    /// newest snapshot unreadable, say) is refused rather than run.
    pub(super) async fn adopt(&self, name: &str, after_tick: Option<u64>) -> Result<Adopted, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        if self.zone(name).is_some() {
            return Err(HandoverError::AlreadyHosted(name.to_owned()));
        }
        let Some(zone_config) = self.config.zones.iter().find(|z| z.name == name) else {
            return Err(HandoverError::NotConfigured(name.to_owned()));
        };
        let started = Instant::now();
        let lease = match self.take_lease(zone_config).await {
            Ok(Taken::Held(lease)) => lease,
            Ok(Taken::ByOther { owner }) => return Err(HandoverError::LeasedByOther { zone: name.to_owned(), owner }),
            Err(e) => return Err(HandoverError::Unrestorable(format!("zone {name:?}: cannot take its lease: {e}"))),
        };
        let format = self.config.compat.snapshot_format;
        let restored = persist::restore_reading(zone_config, &self.stores, format, after_tick).await;
        let (zone, report) = match restored {
            Ok(restored) => restored,
            Err(why) => {
                lease.release().await;
                return Err(HandoverError::Unrestorable(why));
            }
        };
        if let Some(expected) = after_tick.filter(|t| zone.tick_number() < *t) {
            lease.release().await;
            let refused = if report.refused.is_empty() { "none".to_owned() } else { report.refused.join("; ") };
            return Err(HandoverError::Stale { zone: name.to_owned(), expected, found: zone.tick_number(), refused });
        }
        let persist_state = Arc::new(PersistState::default());
        let history = self.config.persist.history.enabled().then(|| self.config.tick_period());
        persist::checkpoint_after_restore(
            &zone,
            report.journal_epoch,
            &self.stores,
            &persist_state,
            lease.fence(),
            history,
        )
        .await;
        let (tick, players, source) = (zone.tick_number(), zone.players().len(), report.source);
        let handle = match self.start_zone(zone_config, zone, report, persist_state, lease.clone()) {
            Ok(handle) => handle,
            Err(why) => {
                lease.release().await;
                return Err(HandoverError::StartFailed(why));
            }
        };
        self.insert_zone(handle);
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(zone = %name, tick, players, took_ms, "zone adopted");
        Ok(Adopted { zone: name.to_owned(), tick, players: players as u64, source, took_ms })
    }

    /// Hand-off, first half: the zone's last tick is stored and it stops
    /// ticking here. Abandoned (the zone ticks on) if its state cannot be stored.
    pub(super) async fn release(&self, name: &str) -> Result<Released, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        let started = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        zone.control.send(Control::Release { reply }).map_err(|_| gone(name))?;
        let tick = match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(Ok(tick))) => tick,
            Ok(Ok(Err(why))) => return Err(HandoverError::NotStored(why)),
            Ok(Err(_)) | Err(_) => return Err(gone(name)),
        };
        // The new owner reads the stores: everything through `tick` must be there first.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (reply, answer) = tokio::sync::oneshot::channel();
            zone.control.send(Control::Flush { reply }).map_err(|_| gone(name))?;
            let durable = tokio::time::timeout(Duration::from_secs(5), answer).await.ok().and_then(Result::ok);
            if durable.is_some_and(|d| d >= tick) {
                break;
            }
            if Instant::now() >= deadline {
                let _ = zone.control.send(Control::Unpark);
                return Err(HandoverError::NotStored(format!(
                    "zone {name:?}: its state through tick {tick} could not be stored; it ticks here again"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Everything is stored: the next owner may take the zone at once.
        zone.lease.release().await;
        let players = zone.status.players.load(Ordering::Relaxed);
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(zone = %name, tick, players, took_ms, "zone released");
        Ok(Released { zone: name.to_owned(), tick, players: players as u64, took_ms })
    }

    /// Hand-off, second half: clients go to the zone's new owner and the zone leaves this server.
    pub(super) async fn redirect(&self, name: &str, address: &str) -> Result<Redirected, HandoverError> {
        let _one_at_a_time = self.handover.lock().await;
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        if !zone.status.parked.load(Ordering::SeqCst) {
            return Err(HandoverError::NotReleased(name.to_owned()));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        zone.control.send(Control::Redirect { address: address.to_owned(), reply }).map_err(|_| gone(name))?;
        let told = tokio::time::timeout(Duration::from_secs(5), answer).await.ok().and_then(Result::ok).unwrap_or(0);
        self.remove_zone(name);
        zone.wait_stopped().await;
        zone.metrics.players.set(0);
        Ok(Redirected { zone: name.to_owned(), redirected_players: told as u64, to: address.to_owned() })
    }

    /// Abandons a hand-off: the released zone ticks here again, with its
    /// lease taken back (refused if another server took the zone meanwhile).
    pub(super) async fn unpark(&self, name: &str) -> Result<Resumed, HandoverError> {
        let zone = self.zone(name).ok_or_else(|| HandoverError::NotHere(name.to_owned()))?;
        if zone.status.parked.load(Ordering::SeqCst) {
            zone.lease.take_back().await.map_err(|e| HandoverError::NotResumed(format!("zone {name:?}: {e}")))?;
        }
        zone.control.send(Control::Unpark).map_err(|_| gone(name))?;
        Ok(Resumed { zone: name.to_owned() })
    }
}
