//! Failover (`--take-over`): a spare adopts each zone of its configuration
//! whose lease has run out, that is whose server was lost (killed, its host
//! gone, or cut off from the lease store). A zone released on purpose is
//! unheld only for the moment between a hand-off's release and adoption, so
//! a zone counts as lost only once it has been unheld for [`grace`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handover::HandoverError;
use super::state::ServerState;

/// How long a zone must stay unheld before a spare takes it over: a
/// hand-off's release and adoption, and when refused the old owner taking
/// it back, are each one store call apart (the restore runs under the
/// lease), so they fit in it many times over.
fn grace(ttl: Duration) -> Duration {
    (ttl / 8).max(Duration::from_millis(250))
}

/// Watches the leases of the zones not hosted here, every eighth of the
/// lease time, until the server drains. From an owner's loss to the zone
/// ticking here: at most the lease time, the grace, one look and the restore.
pub(super) async fn take_over_lost_zones(state: Arc<ServerState>) {
    let ttl = state.config.persist.lease_ttl;
    let mut unheld_since: BTreeMap<String, Instant> = BTreeMap::new();
    tracing::info!(grace_ms = grace(ttl).as_millis() as u64, "taking over zones whose lease runs out");
    loop {
        tokio::select! {
            _ = state.drain_requested.cancelled() => return,
            _ = tokio::time::sleep(ttl / 8) => {}
        }
        for zone in &state.config.zones {
            if state.zone(&zone.name).is_some() {
                unheld_since.remove(&zone.name);
                continue;
            }
            match state.stores.leases.holder(zone.zone_id).await {
                Ok(Some(_)) => {
                    unheld_since.remove(&zone.name);
                }
                Ok(None) => {
                    let since = *unheld_since.entry(zone.name.clone()).or_insert_with(Instant::now);
                    if since.elapsed() < grace(ttl) || state.drain_requested.is_cancelled() {
                        continue;
                    }
                    tracing::warn!(zone = %zone.name, "the zone's lease ran out: taking it over");
                    match state.adopt(&zone.name, None).await {
                        Ok(adopted) => {
                            unheld_since.remove(&zone.name);
                            state.metrics.taken_over(&zone.name);
                            tracing::info!(zone = %zone.name, tick = adopted.tick, source = %adopted.source, took_ms = adopted.took_ms, "zone taken over");
                        }
                        // Another spare was quicker, or the owner came back.
                        Err(HandoverError::LeasedByOther { owner, .. }) => {
                            tracing::info!(zone = %zone.name, %owner, "taken over by another server");
                        }
                        Err(e) => tracing::error!(zone = %zone.name, error = %e, "cannot take the zone over"),
                    }
                }
                Err(e) => tracing::debug!(zone = %zone.name, error = %e, "lease store unreachable"),
            }
        }
    }
}
