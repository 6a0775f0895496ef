//! The publisher: drains a zone's outbox to the event log (Kafka) in order
//! and acknowledges only what the broker took. While the broker is away the
//! events wait in the outbox and the publisher retries with backoff.
//!
//! Events reach the outbox before their tick is durable (so no durable tick
//! ever lacks its events), and leave it only once it is ([`PublishGate`]):
//! the ledger never holds an event of a tick a restore can take back. After
//! a crash, what the lost process recorded past the ticks the restore kept
//! is withdrawn: that play never happened.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use respawn_proto::events::Event;
use respawn_store::kafka::{EventLog, KeyedRecord};
use respawn_store::outbox::Outbox;
use tokio_util::sync::CancellationToken;

use crate::metrics::PersistMetrics;
use crate::persist::PersistState;

/// Records per publish call.
const BATCH: usize = 5_000;

/// Which of a zone's recorded events may be published: those of durable
/// ticks of the timeline running now, and those of earlier timelines up to
/// the tick the next one started from. One per outbox, told of every
/// timeline its zone starts in this process (a restore, an adoption).
#[derive(Debug, Default)]
pub struct PublishGate {
    timelines: Mutex<Timelines>,
}

#[derive(Debug, Default)]
struct Timelines {
    /// The timeline ticking now: its epoch and how far it is stored.
    current: Option<(u64, Arc<PersistState>)>,
    /// Every timeline started here: (epoch, the tick it starts after), oldest first.
    starts: Vec<(u64, u64)>,
}

/// The epoch standing for a timeline another server started: none here has it.
const ELSEWHERE: u64 = u64::MAX;

/// What the publisher does with one recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Publish,
    /// Its tick is not durable yet.
    Wait,
    /// Of a tick a restore took back: never published.
    Withdraw,
}

impl PublishGate {
    /// The zone's timeline `epoch` starts after `start_tick`; `state` says how far it is durable.
    pub fn begin(&self, epoch: u64, start_tick: u64, state: Arc<PersistState>) {
        if let Ok(mut t) = self.timelines.lock() {
            t.starts.push((epoch, start_tick));
            t.current = Some((epoch, state));
        }
    }

    /// The timeline ticking here was superseded: another server runs the
    /// zone from what was stored. What it recorded past its durable tick
    /// never happened; the new owner re-records what the store held past it.
    pub fn end_superseded(&self) {
        if let Ok(mut t) = self.timelines.lock() {
            if let Some((_, state)) = t.current.take() {
                let durable = state.durable_tick.load(std::sync::atomic::Ordering::Relaxed);
                t.starts.push((ELSEWHERE, durable));
            }
        }
    }

    /// The durable state of the timeline ticking now.
    fn current(&self) -> Option<Arc<PersistState>> {
        self.timelines.lock().ok()?.current.as_ref().map(|(_, s)| s.clone())
    }

    pub fn release(&self, epoch: u64, tick: u64) -> Release {
        let Ok(t) = self.timelines.lock() else { return Release::Wait };
        match &t.current {
            Some((current, state)) if epoch == *current => {
                return match tick <= state.durable_tick.load(std::sync::atomic::Ordering::Relaxed) {
                    true => Release::Publish,
                    false => Release::Wait,
                };
            }
            // No timeline started here yet.
            None if t.starts.is_empty() => return Release::Wait,
            _ => {}
        }
        // An earlier timeline: cut where each one after it began (every one
        // started here, for a timeline of the process before).
        let after = t.starts.iter().position(|(e, _)| *e == epoch).map_or(0, |i| i + 1);
        match t.starts[after..].iter().map(|(_, start)| *start).min() {
            Some(cut) if tick > cut => Release::Withdraw,
            _ => Release::Publish,
        }
    }
}

/// The partition key of an outbox record (its player, big-endian) and its timeline and tick.
fn keyed(payload: Vec<u8>) -> (KeyedRecord, u64, u64) {
    let (player, epoch, tick) = Event::decode(payload.as_slice()).map_or((0, 0, 0), |e| (e.player, e.epoch, e.tick));
    (KeyedRecord { key: player.to_be_bytes(), payload }, epoch, tick)
}

/// Runs until `stop`, then tries for up to `final_flush` to empty the outbox.
pub async fn run_publisher(
    zone: String,
    outbox: Arc<Outbox>,
    gate: Arc<PublishGate>,
    log: Arc<dyn EventLog>,
    metrics: PersistMetrics,
    stop: CancellationToken,
    final_flush: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    let mut flush_deadline: Option<Instant> = None;
    let mut unreadable = false;
    // Published and not yet acknowledged to the outbox: that goes with the next read.
    let mut published_through: Option<u64> = None;
    loop {
        if stop.is_cancelled() {
            let deadline = *flush_deadline.get_or_insert_with(|| Instant::now() + final_flush);
            if Instant::now() >= deadline {
                break;
            }
        }
        let batch = if published_through.is_none() && outbox.pending() == 0 {
            // Nothing new, known without a trip to the disk.
            Vec::new()
        } else {
            // The acknowledgement and the next read take one trip to a blocking thread.
            let (outbox, to_ack) = (outbox.clone(), published_through.take());
            let trip = tokio::task::spawn_blocking(move || {
                let acked = to_ack.map(|seq| outbox.ack(seq));
                (acked, outbox.read(outbox.acked(), BATCH))
            })
            .await;
            let (acked, read) = trip.unwrap_or_else(|_| (None, Ok(Vec::new())));
            if let Some(Err(e)) = acked {
                tracing::error!(zone = %zone, error = %e, "cannot record the outbox acknowledgement");
            }
            match read {
                Ok(batch) => {
                    unreadable = false;
                    batch
                }
                Err(e) => {
                    // A bad record stays bad: said once, tried again each second.
                    if !unreadable {
                        tracing::error!(zone = %zone, error = %e, "cannot read the outbox; publishing waits");
                    }
                    unreadable = true;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => {}
                    }
                    continue;
                }
            }
        };
        // What may go: the records up to the first of a tick not durable yet.
        let (mut records, mut last, mut withdrawn) = (Vec::new(), None, 0u64);
        for (seq, payload) in batch {
            let (record, epoch, tick) = keyed(payload);
            match gate.release(epoch, tick) {
                Release::Wait => break,
                Release::Withdraw => withdrawn += 1,
                Release::Publish => records.push(record),
            }
            last = Some(seq);
        }
        let Some(last) = last else {
            if stop.is_cancelled() {
                break;
            }
            // Woken as soon as a tick is durable: events go to the outbox
            // before their tick is. The sleep covers what does not move the
            // running timeline (a restore's records, a timeline begun since),
            // at a fraction of the wake-ups.
            let durable = gate.current();
            let advanced = async {
                match &durable {
                    Some(state) => state.advanced.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = advanced => {}
                _ = stop.cancelled() => {}
            }
            continue;
        };
        if withdrawn > 0 {
            metrics.events_withdrawn.inc_by(withdrawn);
            tracing::warn!(zone = %zone, events = withdrawn, "withdrew events of ticks a restore took back");
        }
        let count = records.len() as u64;
        let published = if records.is_empty() { Ok(()) } else { log.publish(records).await };
        match published {
            Ok(()) => {
                published_through = Some(last);
                metrics.published(count);
                backoff = Duration::from_millis(100);
                if let Some(since) = down_since.take() {
                    tracing::info!(zone = %zone, down_ms = since.elapsed().as_millis() as u64, "event publishing resumed");
                }
            }
            Err(e) => {
                metrics.publish_failed();
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::warn!(zone = %zone, error = %e, "event log unavailable; events wait in the outbox");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        metrics.outbox(outbox.stats());
    }
    // What was acknowledged in memory only is written before the process goes.
    let (writer, to_ack) = (outbox.clone(), published_through.take());
    let written = tokio::task::spawn_blocking(move || {
        if let Some(seq) = to_ack {
            writer.ack(seq)?;
        }
        writer.write_ack()
    })
    .await;
    if let Ok(Err(e)) = written {
        tracing::error!(zone = %zone, error = %e, "cannot record the outbox acknowledgement");
    }
    metrics.outbox(outbox.stats());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durable_through(tick: u64) -> Arc<PersistState> {
        let state = Arc::new(PersistState::default());
        state.durable_tick.store(tick, std::sync::atomic::Ordering::Relaxed);
        state
    }

    #[test]
    fn nothing_goes_before_a_timeline_starts() {
        assert_eq!(PublishGate::default().release(1, 1), Release::Wait);
    }

    #[test]
    fn events_of_the_running_timeline_wait_until_their_tick_is_durable() {
        let gate = PublishGate::default();
        let state = durable_through(10);
        gate.begin(7, 0, state.clone());
        assert_eq!(gate.release(7, 10), Release::Publish);
        assert_eq!(gate.release(7, 11), Release::Wait);
        state.durable_tick.store(11, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(gate.release(7, 11), Release::Publish);
    }

    #[test]
    fn a_lost_process_events_past_the_restored_tick_are_withdrawn() {
        // The process before ran timeline 5 through tick 120; the restore kept ticks up to 100.
        let gate = PublishGate::default();
        gate.begin(8, 100, durable_through(100));
        assert_eq!(gate.release(5, 100), Release::Publish, "kept by the restore");
        assert_eq!(gate.release(5, 101), Release::Withdraw, "a tick the restore took back");
    }

    #[test]
    fn each_earlier_timeline_is_cut_where_the_next_one_began() {
        // Timeline 8 began after tick 100 and ran to 150; a second restore kept up to 140 (timeline 9).
        let gate = PublishGate::default();
        gate.begin(8, 100, durable_through(150));
        gate.begin(9, 140, durable_through(140));
        assert_eq!(gate.release(8, 140), Release::Publish);
        assert_eq!(gate.release(8, 141), Release::Withdraw);
        assert_eq!(gate.release(5, 120), Release::Withdraw, "timeline 5 ended at 100, before timeline 8");
        assert_eq!(gate.release(5, 100), Release::Publish);
    }

    #[test]
    fn a_superseded_timeline_publishes_its_durable_ticks_and_withdraws_the_rest() {
        // Cut off from the store at tick 200, the zone ran on to 260 before it learned another server had it.
        let gate = PublishGate::default();
        gate.begin(8, 100, durable_through(200));
        assert_eq!(gate.release(8, 230), Release::Wait, "it might yet be stored");
        gate.end_superseded();
        assert_eq!(gate.release(8, 200), Release::Publish);
        assert_eq!(gate.release(8, 201), Release::Withdraw);
        assert_eq!(gate.release(5, 100), Release::Publish, "an earlier timeline is cut where the next began");
        assert_eq!(gate.release(5, 101), Release::Withdraw);
    }
}
