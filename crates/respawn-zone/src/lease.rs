//! This server's hold on the zones it hosts: one lease per zone (see
//! [`respawn_store::lease`]), taken before the zone is restored, renewed in
//! the background, given back when the zone is handed off or stopped. Every
//! durable write of the zone carries the lease's fence, so once another
//! server has taken the zone the stores refuse this one's writes; the
//! server then stops the zone without writing ([`HeldLease::lost`]).
//!
//! While the lease store is out of reach the zone ticks on (players keep
//! playing) and renewal keeps being tried; every store that makes a tick
//! durable checks the fence itself (the cold snapshots' store keeps a copy
//! that a new owner raises before it reads), so what this server still
//! stores meanwhile is either before any new owner read, or refused. A
//! renewal that gets through takes the lease back as long as nobody else
//! was granted it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use respawn_store::lease::{Lease, Leases};
use respawn_store::{Fence, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a server waits for a zone whose lease another owner holds: a
/// lost owner's lease runs out within its time to live, a live owner's never.
fn patience(ttl: Duration) -> Duration {
    ttl + ttl / 2 + Duration::from_millis(250)
}

/// How long taking a lease waits for an unreachable lease store.
const STORE_PATIENCE: Duration = Duration::from_secs(10);

/// Who holds the zone's lease now, and its token, for messages: `("?", 0)`
/// when nobody does or the store cannot say.
pub(crate) async fn holder_of(leases: &dyn Leases, zone: u32) -> (String, u64) {
    leases.holder(zone).await.ok().flatten().unwrap_or_else(|| ("?".into(), 0))
}

/// What became of an attempt to take a zone's lease.
#[derive(Debug)]
pub enum Taken {
    Held(Arc<HeldLease>),
    /// A live server holds it and kept renewing it while we waited.
    ByOther {
        owner: String,
    },
}

/// A zone's lease while this server hosts the zone.
#[derive(Debug)]
pub struct HeldLease {
    leases: Arc<dyn Leases>,
    name: String,
    ttl: Duration,
    lease: Mutex<Lease>,
    /// The lease's token, read by every write without the lock.
    token: AtomicU64,
    /// Cancelled once another server was granted the zone.
    lost: CancellationToken,
    /// The last renewal failed (the store out of reach): whether another
    /// server has the zone now is unknown here.
    in_doubt: AtomicBool,
    /// Cancelled when the lease is given back: renewal stops.
    renewing: Mutex<CancellationToken>,
    /// Told the zone's name once the lease is lost: the server stops the zone.
    on_lost: mpsc::UnboundedSender<String>,
}

impl HeldLease {
    /// Takes the lease of zone `zone` (`name`) for `owner`, waiting out a
    /// lease left by an owner that is gone. `on_lost` is told `name` if the
    /// lease is lost later.
    pub async fn take(
        leases: Arc<dyn Leases>,
        zone: u32,
        name: &str,
        owner: &str,
        ttl: Duration,
        on_lost: mpsc::UnboundedSender<String>,
    ) -> Result<Taken, StoreError> {
        let started = Instant::now();
        let mut holder: Option<String> = None;
        loop {
            match leases.acquire(zone, owner, ttl).await {
                Ok(Some(lease)) => {
                    if let Some(previous) = holder {
                        let waited_ms = started.elapsed().as_millis() as u64;
                        tracing::info!(zone = %name, previous = %previous, waited_ms, "lease of a lost owner taken over");
                    }
                    tracing::debug!(zone = %name, token = lease.token, "lease taken");
                    let held = Arc::new(Self {
                        leases,
                        name: name.to_owned(),
                        ttl,
                        token: AtomicU64::new(lease.token),
                        lease: Mutex::new(lease),
                        lost: CancellationToken::new(),
                        in_doubt: AtomicBool::new(false),
                        renewing: Mutex::new(CancellationToken::new()),
                        on_lost,
                    });
                    held.clone().renew_in_background();
                    return Ok(Taken::Held(held));
                }
                Ok(None) if started.elapsed() < patience(ttl) => {
                    if holder.is_none() {
                        let (owner, _) = holder_of(leases.as_ref(), zone).await;
                        tracing::info!(zone = %name, holder = %owner, "zone leased by another server; waiting for its lease to run out");
                        holder = Some(owner);
                    }
                }
                Ok(None) => {
                    let (owner, _) = holder_of(leases.as_ref(), zone).await;
                    return Ok(Taken::ByOther { owner });
                }
                Err(e @ StoreError::Unavailable { .. }) if started.elapsed() < STORE_PATIENCE => {
                    tracing::warn!(zone = %name, error = %e, "lease store unreachable; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(ttl / 4).await;
        }
    }

    /// The lease as last granted or renewed.
    pub fn lease(&self) -> Lease {
        self.current()
    }

    /// What this server's writes for the zone carry.
    pub fn fence(&self) -> Fence {
        Fence(self.token.load(Ordering::Acquire))
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Its last renewal failed: the store is out of reach, and another
    /// server may have taken the zone (the platform can tell).
    pub fn in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::Relaxed)
    }

    /// A store refused a write: a newer owner (token `newer`) has the zone.
    pub fn superseded(&self, newer: u64) {
        if !self.lost.is_cancelled() {
            tracing::error!(
                zone = %self.name,
                mine = self.current().token,
                newer,
                "another server now owns this zone; stopping it here without writing"
            );
            self.stop_renewing();
            self.lost.cancel();
            let _ = self.on_lost.send(self.name.clone());
        }
    }

    /// Gives the lease back (hand-off, stop): the next owner need not wait for it to run out.
    pub async fn release(&self) {
        self.stop_renewing();
        if self.is_lost() {
            return;
        }
        if let Err(e) = self.leases.release(&self.current()).await {
            tracing::warn!(zone = %self.name, error = %e, "lease not released; it runs out by itself");
        }
    }

    /// After [`release`](Self::release) (an abandoned hand-off): takes the
    /// lease back, with its token if nobody took it since, else with a new
    /// one if nobody holds it now (the would-be new owner took it and gave
    /// up: the zone never ran there, or ran unacknowledged, and is fenced
    /// from here on).
    pub async fn take_back(self: &Arc<Self>) -> Result<(), StoreError> {
        let current = self.current();
        let lease = match self.leases.renew(&current, self.ttl).await? {
            Some(lease) => Some(lease),
            None => self.leases.acquire(current.zone, &current.owner, self.ttl).await?,
        };
        match lease {
            Some(lease) => {
                self.set(lease);
                if let Ok(mut renewing) = self.renewing.lock() {
                    *renewing = CancellationToken::new();
                }
                self.clone().renew_in_background();
                Ok(())
            }
            None => {
                let (_, newer) = holder_of(self.leases.as_ref(), current.zone).await;
                self.superseded(newer);
                Err(StoreError::Fenced { zone: current.zone, mine: current.token, newer })
            }
        }
    }

    fn current(&self) -> Lease {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, lease: Lease) {
        let mut held = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        self.token.store(lease.token, Ordering::Release);
        *held = lease;
    }

    fn stop_renewing(&self) {
        if let Ok(renewing) = self.renewing.lock() {
            renewing.cancel();
        }
    }

    /// Renews every third of the time to live until released or lost.
    fn renew_in_background(self: Arc<Self>) {
        let stop = self.renewing.lock().map(|r| r.clone()).unwrap_or_default();
        tokio::spawn(async move {
            let mut unreachable_since: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.ttl / 3) => {}
                }
                let current = self.current();
                match self.leases.renew(&current, self.ttl).await {
                    _ if stop.is_cancelled() => return,
                    Ok(Some(lease)) => {
                        self.set(lease);
                        self.in_doubt.store(false, Ordering::Relaxed);
                        if let Some(since) = unreachable_since.take() {
                            let out_ms = since.elapsed().as_millis() as u64;
                            tracing::info!(zone = %self.name, out_ms, "lease renewed again");
                        }
                    }
                    Ok(None) => {
                        let (_, newer) = holder_of(self.leases.as_ref(), current.zone).await;
                        self.superseded(newer);
                        return;
                    }
                    Err(e) => {
                        self.in_doubt.store(true, Ordering::Relaxed);
                        if unreachable_since.is_none() {
                            unreachable_since = Some(Instant::now());
                            tracing::warn!(
                                zone = %self.name,
                                error = %e,
                                "lease not renewed; the zone ticks on, and nothing is acknowledged until its stores answer"
                            );
                        }
                    }
                }
            }
        });
    }
}
