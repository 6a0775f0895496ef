//! The graceful drain's first four steps (readiness off, joins refused,
//! players told, wait for them to leave until the deadline); `ZoneServer::run`
//! does the fifth.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use respawn_proto::NoticeKind;

use super::state::ServerState;
use super::{DrainReport, ServerView};
use crate::zone_loop::Control;

/// Steps 1-4 of the drain: readiness off, joins refused, players told,
/// wait for them to leave until the deadline.
pub(super) async fn drain(state: &Arc<ServerState>) -> DrainReport {
    let deadline = state.config.drain_deadline;
    if let Some(hook) = state.before_drain.as_ref().filter(|_| !state.hosted().is_empty()) {
        tracing::info!(step = "0/5", "drain: handing the zones to another server first");
        let view = ServerView { state: state.clone() };
        if tokio::time::timeout(deadline, (hook.0)(view)).await.is_err() {
            tracing::warn!("drain: the hand-over did not finish within the drain deadline");
        }
        match state.zone_names().as_str() {
            "no zone" => tracing::info!("drain: every zone runs elsewhere now"),
            left => tracing::warn!(zones = left, "drain: still hosting these; their players are told to reconnect"),
        }
    }
    state.ready.store(false, Ordering::SeqCst);
    state.metrics.set_ready(false);
    tracing::info!(step = "1/5", "drain: readiness off");
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(step = "2/5", "drain: refusing new joins");
    let players_at_start = state.players();
    let deadline_ms = deadline.as_millis().min(u128::from(u32::MAX)) as u32;
    for zone in state.zone_handles() {
        let _ = zone.control.send(Control::Broadcast {
            kind: NoticeKind::Shutdown,
            text: "This server is shutting down for maintenance. Please reconnect.".into(),
            deadline_ms,
        });
    }
    tracing::info!(step = "3/5", players = players_at_start, deadline_ms, "drain: players told of the shutdown");
    let started = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let players = state.players();
        if players == 0 {
            break;
        }
        if started.elapsed() >= deadline {
            tracing::warn!(players, "drain: deadline reached with players still connected");
            break;
        }
        if last_log.elapsed() >= Duration::from_secs(1) {
            tracing::info!(step = "4/5", players, "drain: waiting for players to leave");
            last_log = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = state.force.cancelled() => {
                tracing::warn!(players, "drain: forced, not waiting for players");
                break;
            }
        }
    }
    let report = DrainReport { players_at_start, players_left_over: state.players(), waited: started.elapsed() };
    tracing::info!(step = "4/5", left_over = report.players_left_over, "drain: wait over");
    report
}
