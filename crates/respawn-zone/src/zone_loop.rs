//! One zone's tick thread: drains the bounded command queue, runs the pure
//! simulation, and offers every client its update without ever waiting on a
//! socket. A slow client loses updates (counted) and is cut off past a limit.
//! Each tick's batch goes to the persister (journal), a snapshot every few
//! seconds; commands are acknowledged once the persister made them durable.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use respawn_api::admin::HeldCharacter;
use respawn_proto::{CloseCode, NoticeKind};
use respawn_sim::command::encode_batch;
use respawn_sim::view::{ClientView, Delta, FieldIndex};
use respawn_sim::{Character, Command, CommandKind, EventKind, PlayerId, RejectReason, Rejection, Zone};
use tokio::sync::{mpsc, oneshot};

use crate::link::{ClientLink, Delivery, Room, Sockets};
use crate::metrics::ZoneMetrics;
use crate::persist::{PersistMsg, PersistState};
use crate::wire::{self, UpdateEncoder, UpdateFormat};

/// Messages to a zone that are not gameplay commands. Their number is bounded
/// by connections (one attach and one detach each), so the channel needs no cap.
/// What a connection may bring into the zone when its player's character
/// is not there already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A new character no platform keeps (a zone server of its own).
    Fresh,
    /// The character of a platform's ticket.
    Kept(Character),
    /// Nothing: only a character still in the zone can be taken back (a
    /// resume token on a server whose characters the platform keeps).
    ResumeOnly,
}

#[derive(Debug)]
pub enum Control {
    Attach {
        player: PlayerId,
        name: String,
        link: ClientLink,
        /// Handed to the client in its Welcome.
        resume_token: String,
        entry: Entry,
    },
    Detach {
        player: PlayerId,
        conn_id: u64,
        /// The player asked to leave: the character goes now. Otherwise it
        /// waits for a resume until the grace period ends.
        left: bool,
    },
    Broadcast {
        kind: NoticeKind,
        text: String,
        deadline_ms: u32,
    },
    /// Tells the player why, closes its connection and removes its character.
    Kick {
        player: PlayerId,
        reason: String,
    },
    Stop,
    /// Hand-off, first half: tick what is queued, snapshot, and stop ticking
    /// (the zone is parked). Answered with the last tick, or why not.
    Release {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Answered with the tick and the characters the zone holds.
    Roster {
        reply: oneshot::Sender<(u64, Vec<HeldCharacter>)>,
    },
    /// Answered with the durable tick once the persister wrote what it was sent.
    Flush {
        reply: oneshot::Sender<u64>,
    },
    /// While parked: tick here again (the hand-off was abandoned).
    Unpark,
    /// Another server owns the zone now: every client is told to log in
    /// again and the thread ends, with no last tick (nothing of it could be stored).
    Superseded,
    /// While parked: the zone now runs at `address`. Every client is told to
    /// go there and its connection closed; the zone's thread ends.
    Redirect {
        address: String,
        reply: oneshot::Sender<usize>,
    },
}

/// Fixed settings of a zone's loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub period: Duration,
    pub tick_hz: u32,
    pub view_radius: i32,
    pub max_visible: usize,
    pub max_players: usize,
    pub max_dropped_updates: u32,
    pub max_batch: usize,
    pub server_version: String,
    /// How long a character without a connection waits for a resume.
    pub resume_grace: Duration,
    /// Test-only busy time added to every tick (a slow zone on purpose).
    pub extra_tick: Duration,
    /// Threads a tick's replication may be split over (at least 1).
    pub replication_threads: usize,
    /// Replication stays on the tick's own thread while one thread is
    /// expected to finish it within this ([`REPLICATE_ALONE_WITHIN`]).
    pub replicate_alone_within: Duration,
}

/// Below this, handing half of a tick's replication to another thread
/// costs more CPU (a thread started and joined, caches warmed twice) than
/// the tick's latency is worth: at 1,000 clients on 2 cores the server
/// used 5% less CPU per update on one thread, at the same tick p99.
pub const REPLICATE_ALONE_WITHIN: Duration = Duration::from_millis(5);

/// Figures the rest of the server reads without talking to the thread.
#[derive(Debug, Default)]
pub struct ZoneStatus {
    pub players: AtomicUsize,
    pub tick: AtomicU64,
    /// Milliseconds since the server epoch at the end of the last tick.
    pub last_tick_ms: AtomicU64,
    /// Released for a hand-off: not ticking, commands and joins refused.
    pub parked: AtomicBool,
}

/// The tick thread's side of persistence.
#[derive(Debug)]
pub struct PersistLink {
    pub tx: mpsc::Sender<PersistMsg>,
    pub state: Arc<PersistState>,
    pub snapshot_every: Duration,
    last_snapshot: Instant,
}

impl PersistLink {
    pub fn new(tx: mpsc::Sender<PersistMsg>, state: Arc<PersistState>, snapshot_every: Duration) -> Self {
        Self { tx, state, snapshot_every, last_snapshot: Instant::now() }
    }
}

struct Client {
    link: ClientLink,
    view: ClientView,
    dropped_in_row: u32,
    resume_token: String,
    /// `(tick, seq)` of this client's commands not yet durable, oldest first.
    unacked: VecDeque<(u64, u32)>,
    /// Highest seq confirmed durable but not yet told to the client.
    ack_due: Option<u32>,
}

/// The zone plus everything the tick needs besides the queues. Owned by the
/// tick thread; benchmarks drive it directly.
pub struct ZoneRunner {
    zone: Zone,
    /// The tick the zone was restored at (its timeline, the epoch, starts there).
    timeline_start_tick: u64,
    settings: LoopSettings,
    metrics: ZoneMetrics,
    clients: BTreeMap<PlayerId, Client>,
    /// Characters without a connection, and when they stop waiting for one.
    detached: BTreeMap<PlayerId, Instant>,
    index: FieldIndex,
    batch: Vec<Command>,
    /// Leaves for clients the server cut off, applied at the next tick.
    carry: Vec<Command>,
    welcomes: Vec<(PlayerId, bool)>,
    /// This tick's frames and closes, handed to the I/O thread after the tick.
    deliveries: Vec<Delivery>,
    /// One per replicating thread, reused tick after tick.
    scratch: Vec<PartScratch>,
    /// Replication's time per client (a moving average, threads added up);
    /// unknown until the first tick with clients.
    replication_per_client: Option<Duration>,
    persist: Option<PersistLink>,
}

/// Queues `frame` for `link` if its buffer has room; returns whether it did.
fn offer(deliveries: &mut Vec<Delivery>, metrics: &ZoneMetrics, link: &ClientLink, frame: Bytes) -> bool {
    match link.room() {
        Room::Ready => {
            metrics.packets_out.inc();
            metrics.bytes_out.inc_by(frame.len() as u64);
            deliveries.push(link.frame(frame));
            true
        }
        Room::Full | Room::Closed => false,
    }
}

impl std::fmt::Debug for ZoneRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneRunner")
            .field("zone", &self.zone.config().name)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl ZoneRunner {
    /// A runner for `zone`; characters already in it (a restored zone) wait
    /// one grace period for their players to resume.
    pub fn new(zone: Zone, settings: LoopSettings, metrics: ZoneMetrics, persist: Option<PersistLink>) -> Self {
        let until = Instant::now() + settings.resume_grace;
        let detached = zone.players().keys().map(|p| (*p, until)).collect();
        Self {
            timeline_start_tick: zone.tick_number(),
            zone,
            settings,
            metrics,
            clients: BTreeMap::new(),
            detached,
            index: FieldIndex::default(),
            batch: Vec::new(),
            // The first tick in this process records that the zone started.
            carry: vec![Command { player: 0, seq: 0, kind: CommandKind::ZoneStarted }],
            welcomes: Vec::new(),
            deliveries: Vec::new(),
            scratch: Vec::new(),
            replication_per_client: None,
            persist,
        }
    }

    /// The frames and closes produced since the last call, in order.
    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    fn new_client(&self, link: ClientLink, resume_token: String) -> Client {
        Client {
            link,
            view: ClientView::new(self.settings.max_visible),
            dropped_in_row: 0,
            resume_token,
            unacked: VecDeque::new(),
            ack_due: None,
        }
    }

    /// Handles one control message. Returns `false` on `Stop`.
    pub fn control(&mut self, control: Control) -> bool {
        match control {
            Control::Attach { player, name, link, resume_token, entry } => {
                // A character whose leave is queued for the next tick is gone
                // already: resuming it would be undone by that leave.
                let leaving = self
                    .carry
                    .iter()
                    .chain(&self.batch)
                    .any(|c| c.player == player && matches!(c.kind, CommandKind::Leave));
                let held = self.zone.player(player).filter(|_| !leaving).map(|p| p.incarnation);
                let newer = match &entry {
                    Entry::Kept(c) => held.is_some_and(|i| c.incarnation > i),
                    Entry::Fresh | Entry::ResumeOnly => false,
                };
                if let Some(old) = self.clients.remove(&player) {
                    // Same player on a new connection: the old link goes.
                    old.link.conn.close(CloseCode::Replaced, "logged in from another connection");
                    self.metrics.disconnected(CloseCode::Replaced.as_str());
                }
                self.detached.remove(&player);
                let resumed = if held.is_some() && !newer {
                    self.batch.push(Command { player, seq: 0, kind: CommandKind::Resume });
                    true
                } else if held.is_none() && self.clients.len() >= self.settings.max_players {
                    link.conn.close(CloseCode::ZoneFull, "zone is full");
                    self.metrics.disconnected(CloseCode::ZoneFull.as_str());
                    return true;
                } else {
                    let character = match entry {
                        Entry::Kept(c) => c,
                        Entry::Fresh => Character::default(),
                        Entry::ResumeOnly => {
                            let reason = "your character is no longer in this zone; sign in again";
                            link.conn.close(CloseCode::CharacterUnavailable, reason);
                            self.metrics.disconnected(CloseCode::CharacterUnavailable.as_str());
                            return true;
                        }
                    };
                    if newer {
                        // The character here is from an older stay (the zone went back
                        // in time): it leaves, and the platform's newer one comes in.
                        self.batch.push(Command { player, seq: 0, kind: CommandKind::Leave });
                    }
                    self.batch.push(Command { player, seq: 0, kind: CommandKind::Join { name, character } });
                    false
                };
                let client = self.new_client(link, resume_token);
                self.clients.insert(player, client);
                self.welcomes.push((player, resumed));
            }
            Control::Detach { player, conn_id, left } => {
                if self.clients.get(&player).is_some_and(|c| c.link.conn.id == conn_id) {
                    self.clients.remove(&player);
                    if left {
                        self.batch.push(Command { player, seq: 0, kind: CommandKind::Leave });
                    } else {
                        self.detached.insert(player, Instant::now() + self.settings.resume_grace);
                    }
                }
            }
            Control::Broadcast { kind, text, deadline_ms } => {
                let frame = wire::notice(kind, &text, deadline_ms);
                for client in self.clients.values() {
                    offer(&mut self.deliveries, &self.metrics, &client.link, frame.clone());
                }
            }
            Control::Kick { player, reason } => {
                // A character waiting for its player to come back leaves too.
                if self.detached.remove(&player).is_some() {
                    self.batch.push(Command { player, seq: 0, kind: CommandKind::Leave });
                }
                if let Some(client) = self.clients.remove(&player) {
                    offer(
                        &mut self.deliveries,
                        &self.metrics,
                        &client.link,
                        wire::notice(NoticeKind::Kick, &reason, 0),
                    );
                    self.deliveries.push(Delivery::Close(client.link.conn.clone(), CloseCode::Kicked, reason));
                    self.metrics.disconnected(CloseCode::Kicked.as_str());
                    self.batch.push(Command { player, seq: 0, kind: CommandKind::Leave });
                }
            }
            Control::Superseded => {
                self.superseded();
                return false;
            }
            Control::Stop => {
                // A last tick records the stop; the snapshot then holds it.
                self.wait_for_persister_room();
                self.batch.push(Command { player: 0, seq: 0, kind: CommandKind::ZoneStopped });
                self.tick();
                self.snapshot_now();
                return false;
            }
            Control::Release { reply } => {
                let _ = reply.send(self.release());
            }
            Control::Flush { reply } => self.flush(reply),
            Control::Roster { reply } => {
                let _ = reply.send((self.zone.tick_number(), self.roster()));
            }
            // Only meaningful while parked, where `run` handles them.
            Control::Unpark => {}
            Control::Redirect { reply, .. } => {
                let _ = reply.send(0);
            }
        }
        true
    }

    /// Waits (5 s at most) for room in the persister's queue: stopping and
    /// releasing must not lose the last tick.
    fn wait_for_persister_room(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.persist_queue_full() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs a last tick over what is queued and hands the whole zone to the
    /// persister; returns that tick. Refused while the persister is too far behind.
    fn release(&mut self) -> Result<u64, String> {
        self.wait_for_persister_room();
        if self.persist_queue_full() {
            return Err("the zone's state store is a minute behind; it cannot be handed over now".into());
        }
        self.tick();
        self.snapshot_now();
        Ok(self.zone.tick_number())
    }

    fn roster(&self) -> Vec<HeldCharacter> {
        let players = self.zone.players().values();
        players
            .map(|p| HeldCharacter {
                player: p.id,
                incarnation: p.incarnation,
                connected: self.clients.contains_key(&p.id),
            })
            .collect()
    }

    fn flush(&self, reply: oneshot::Sender<u64>) {
        match &self.persist {
            Some(p) => {
                if let Err(mpsc::error::TrySendError::Full(PersistMsg::Flush(reply))) =
                    p.tx.try_send(PersistMsg::Flush(reply))
                {
                    let _ = reply.send(p.state.durable_tick.load(Ordering::Relaxed));
                }
            }
            None => {
                let _ = reply.send(self.zone.tick_number());
            }
        }
    }

    /// Tells every client the zone now runs at `address` and closes its
    /// connection; returns how many were told. Their characters stay in the
    /// released snapshot, waiting for them to resume at the new address.
    fn redirect(&mut self, address: &str) -> usize {
        let frame = wire::migrate(address);
        let clients = std::mem::take(&mut self.clients);
        for client in clients.values() {
            offer(&mut self.deliveries, &self.metrics, &client.link, frame.clone());
            let reason = format!("zone moved to {address}");
            self.deliveries.push(Delivery::Close(client.link.conn.clone(), CloseCode::Migrated, reason));
            self.metrics.disconnected(CloseCode::Migrated.as_str());
        }
        clients.len()
    }

    /// Closes every client's connection: the zone runs elsewhere now, and
    /// its clients find it by logging in again. Commands still queued were
    /// never ticked here, so never acknowledged.
    fn superseded(&mut self) {
        for client in std::mem::take(&mut self.clients).values() {
            let reason = "the zone is now run by another server; log in again".to_owned();
            self.deliveries.push(Delivery::Close(client.link.conn.clone(), CloseCode::Draining, reason));
            self.metrics.disconnected(CloseCode::Draining.as_str());
        }
    }

    /// Answers a command that arrived while the zone was being handed over.
    fn refuse_moving(&mut self, command: &Command) {
        self.metrics.rejected("zone_moving");
        if let Some(client) = self.clients.get(&command.player) {
            offer(&mut self.deliveries, &self.metrics, &client.link, wire::rejected(command.seq, "zone_moving"));
        }
    }

    /// Adds a player command to this tick's batch.
    pub fn push_command(&mut self, command: Command) {
        self.batch.push(command);
    }

    pub fn batch_len(&self) -> usize {
        self.batch.len()
    }

    /// Hands the whole zone to the persister (skipped while its queue is full;
    /// the journal holds every tick meanwhile).
    fn snapshot_now(&mut self) {
        if let Some(p) = self.persist.as_mut() {
            let bytes = self.zone.encode_snapshot();
            if p.tx.try_send(PersistMsg::Snapshot { tick: self.zone.tick_number(), bytes }).is_ok() {
                p.last_snapshot = Instant::now();
            }
        }
    }

    /// Whether the persister's queue lacks room for a tick and a snapshot.
    fn persist_queue_full(&self) -> bool {
        self.persist.as_ref().is_some_and(|p| !p.tx.is_closed() && p.tx.capacity() < 2)
    }

    /// Runs one tick over the batch gathered so far and replicates it; or,
    /// while the persister is a full queue behind, runs none (counted) and
    /// keeps the batch for later.
    pub fn tick(&mut self) {
        if self.persist_queue_full() {
            self.metrics.ticks_paused.inc();
            return;
        }
        let now = Instant::now();
        let expired: Vec<PlayerId> = self.detached.iter().filter(|(_, t)| **t <= now).map(|(p, _)| *p).collect();
        for player in expired {
            self.detached.remove(&player);
            self.carry.push(Command { player, seq: 0, kind: CommandKind::Leave });
        }
        let mut batch = std::mem::take(&mut self.carry);
        batch.append(&mut self.batch);
        let out = self.zone.tick(&batch);
        let tick = out.tick;
        if let Some(p) = self.persist.as_mut() {
            let events = crate::events::encode_all(&out.events);
            let attended = !batch.is_empty() || !events.is_empty() || !self.zone.players().is_empty();
            // Room was checked above, and this thread is the only sender.
            let _ = p.tx.try_send(PersistMsg::Tick { tick, batch: encode_batch(&batch), events, attended });
            if p.last_snapshot.elapsed() >= p.snapshot_every || p.state.snapshot_wanted.swap(false, Ordering::Relaxed) {
                self.snapshot_now();
            }
        }
        for c in batch.iter().filter(|c| c.seq != 0) {
            if let Some(client) = self.clients.get_mut(&c.player) {
                client.unacked.push_back((tick, c.seq));
            }
        }
        self.metrics.commands_accepted.inc_by(batch.len() as u64);
        for event in &out.events {
            self.metrics.event(event.kind.as_str());
            if let EventKind::PlayerLeft { player, travel: Some(to), .. } = &event.kind {
                self.see_off(*player, to);
            }
        }
        for r in &out.rejections {
            self.metrics.rejected(r.reason.as_str());
            if let Some(client) = self.clients.get(&r.player) {
                offer(&mut self.deliveries, &self.metrics, &client.link, wire::rejected(r.seq, r.reason.as_str()));
            }
        }
        self.send_welcomes(&out.rejections);
        self.replicate();
        self.batch = batch;
        self.batch.clear();
    }

    /// The player walked into an exit to zone `to`: its client is told to
    /// play there and closed.
    fn see_off(&mut self, player: PlayerId, to: &str) {
        self.detached.remove(&player);
        if let Some(client) = self.clients.remove(&player) {
            offer(&mut self.deliveries, &self.metrics, &client.link, wire::travel(to));
            let reason = format!("travelled to {to}");
            self.deliveries.push(Delivery::Close(client.link.conn.clone(), CloseCode::Travelled, reason));
            self.metrics.disconnected(CloseCode::Travelled.as_str());
        }
    }

    /// Ticks up to which every effect is stored (without persistence: all of them).
    fn durable_tick(&self) -> u64 {
        self.persist.as_ref().map_or(self.zone.tick_number(), |p| p.state.durable_tick.load(Ordering::Relaxed))
    }

    /// Welcomes the clients that joined this tick; those whose join the zone
    /// refused (among `rejections`) are closed with the reason.
    fn send_welcomes(&mut self, rejections: &[Rejection]) {
        for (player, resumed) in std::mem::take(&mut self.welcomes) {
            let Some(client) = self.clients.get(&player) else { continue };
            match self.zone.player(player) {
                Some(p) => {
                    let info = wire::WelcomeInfo {
                        entity_id: p.entity,
                        resume_token: &client.resume_token,
                        resumed,
                        timeline_start_tick: self.timeline_start_tick,
                        tick_hz: self.settings.tick_hz,
                        view_radius: self.settings.view_radius,
                        server_version: &self.settings.server_version,
                        protocol_version: client.link.protocol_version,
                    };
                    offer(&mut self.deliveries, &self.metrics, &client.link, wire::welcome(&self.zone, info));
                }
                None => {
                    let stale =
                        rejections.iter().any(|r| r.player == player && r.reason == RejectReason::StaleCharacter);
                    let (code, reason) = if stale {
                        (
                            CloseCode::CharacterUnavailable,
                            "this character's stay here is still being saved; ask to play again",
                        )
                    } else {
                        (CloseCode::Kicked, "the zone refused the join")
                    };
                    client.link.conn.close(code, reason);
                    self.metrics.disconnected(code.as_str());
                    self.clients.remove(&player);
                }
            }
        }
    }

    /// How many threads this tick's replication is split over: one while
    /// one thread is expected to take at most `replicate_alone_within`
    /// (split while that is not known yet, so a big zone's first tick is not slow).
    fn replication_parts(&self) -> usize {
        let clients = self.clients.len();
        let alone = self.replication_per_client.map(|per_client| per_client * clients as u32);
        let threads = match alone {
            Some(alone) if alone <= self.settings.replicate_alone_within => 1,
            _ => self.settings.replication_threads,
        };
        threads.min(clients / MIN_CLIENTS_PER_THREAD).max(1)
    }

    /// Computes and encodes every client's update, its clients split over
    /// up to `replication_threads` threads (each client's work is its own)
    /// when one thread would be slow.
    fn replicate(&mut self) {
        // Cells of half the radius: a query scans 5x5 small cells, about 2x the circle, not 3x.
        self.index.rebuild(&self.zone, self.settings.view_radius / 2);
        let shared = Replication {
            zone: &self.zone,
            index: &self.index,
            settings: &self.settings,
            metrics: &self.metrics,
            durable: self.durable_tick(),
        };
        let started = Instant::now();
        let parts = self.replication_parts();
        if self.scratch.len() < parts {
            self.scratch.resize_with(parts, PartScratch::default);
        }
        let mut clients: Vec<(PlayerId, &mut Client)> = self.clients.iter_mut().map(|(p, c)| (*p, c)).collect();
        let per_part = clients.len().div_ceil(parts).max(1);
        let mut work = clients.chunks_mut(per_part).zip(self.scratch.iter_mut());
        let first = work.next();
        let outputs: Vec<PartOutput> = std::thread::scope(|scope| {
            let others: Vec<_> =
                work.map(|(part, scratch)| scope.spawn(|| shared.replicate_part(part, scratch))).collect();
            let mut outputs: Vec<PartOutput> =
                first.map(|(part, scratch)| shared.replicate_part(part, scratch)).into_iter().collect();
            for other in others {
                outputs.push(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            outputs
        });
        if let Ok(clients @ 1..) = u32::try_from(self.clients.len()) {
            let sample = started.elapsed() * parts as u32 / clients;
            self.replication_per_client =
                Some(self.replication_per_client.map_or(sample, |average| (average * 3 + sample) / 4));
        }
        for output in outputs {
            self.metrics.packets_out.inc_by(output.frames);
            self.metrics.bytes_out.inc_by(output.bytes);
            self.metrics.updates_dropped.inc_by(output.dropped);
            self.deliveries.extend(output.deliveries);
            for player in output.cut_off {
                self.clients.remove(&player);
                self.carry.push(Command { player, seq: 0, kind: CommandKind::Leave });
            }
        }
    }
}

/// Below this many clients per thread, replicating on more threads costs
/// more in hand-over than it saves.
const MIN_CLIENTS_PER_THREAD: usize = 250;

/// What every replicating thread reads.
struct Replication<'a> {
    zone: &'a Zone,
    index: &'a FieldIndex,
    settings: &'a LoopSettings,
    metrics: &'a ZoneMetrics,
    durable: u64,
}

/// What one replicating thread computes each client's update in.
#[derive(Debug, Default)]
struct PartScratch {
    delta: Delta,
    encoder: UpdateEncoder,
}

/// One thread's share of a tick's replication, merged in client order.
#[derive(Default)]
struct PartOutput {
    deliveries: Vec<Delivery>,
    cut_off: Vec<PlayerId>,
    frames: u64,
    bytes: u64,
    dropped: u64,
}

impl Replication<'_> {
    fn replicate_part(&self, clients: &mut [(PlayerId, &mut Client)], scratch: &mut PartScratch) -> PartOutput {
        let mut out = PartOutput::default();
        let PartScratch { delta, encoder } = scratch;
        for (player_id, client) in clients.iter_mut() {
            let Some(player) = self.zone.player(*player_id) else { continue };
            while client.unacked.front().is_some_and(|(t, _)| *t <= self.durable) {
                client.ack_due = client.unacked.pop_front().map(|(_, seq)| seq);
            }
            let room = client.link.room();
            if room == Room::Closed {
                out.cut_off.push(*player_id);
                continue;
            }
            client.view.diff(self.index, player, self.settings.view_radius, delta);
            if delta.is_empty() && client.ack_due.is_none() {
                continue;
            }
            match room {
                Room::Ready => {
                    let ack = client.ack_due.take().map(|seq| wire::Ack { seq, durable_tick: self.durable });
                    let format = UpdateFormat::for_protocol(client.link.protocol_version);
                    let frame = encoder.encode(self.zone, delta, ack, format);
                    out.frames += 1;
                    out.bytes += frame.len() as u64;
                    out.deliveries.push(client.link.frame(frame));
                    client.view.commit(delta);
                    client.dropped_in_row = 0;
                }
                Room::Full => {
                    out.dropped += 1;
                    client.dropped_in_row += 1;
                    if client.dropped_in_row >= self.settings.max_dropped_updates {
                        client.link.conn.close(CloseCode::TooSlow, "client cannot keep up with updates");
                        self.metrics.disconnected(CloseCode::TooSlow.as_str());
                        out.cut_off.push(*player_id);
                    }
                }
                Room::Closed => {}
            }
        }
        out
    }
}

/// Runs a zone's fixed-rate loop on the current thread until `Stop`.
pub fn run(
    mut runner: ZoneRunner,
    mut commands: mpsc::Receiver<Command>,
    mut control: mpsc::UnboundedReceiver<Control>,
    sockets: Sockets,
    status: Arc<ZoneStatus>,
    epoch: Instant,
) {
    let period = runner.settings.period;
    let mut next = Instant::now();
    loop {
        let started = Instant::now();
        runner.metrics.tick_lateness.observe(started.saturating_duration_since(next).as_secs_f64());
        while let Ok(c) = control.try_recv() {
            let reply = match c {
                Control::Release { reply } => reply,
                c => {
                    if !runner.control(c) {
                        publish(&mut runner, &sockets, &status);
                        let (zone, tick) = (&runner.zone.config().name, runner.zone.tick_number());
                        tracing::info!(zone = %zone, tick, "zone loop stopped");
                        return;
                    }
                    continue;
                }
            };
            // Joins and commands are refused from here on; what is queued was
            // accepted before the release and goes into the last tick.
            status.parked.store(true, Ordering::SeqCst);
            while let Ok(c) = commands.try_recv() {
                runner.push_command(c);
            }
            let released = runner.release();
            let parked = released.is_ok();
            publish(&mut runner, &sockets, &status);
            let _ = reply.send(released);
            if parked && matches!(park(&mut runner, &mut commands, &mut control, &sockets, &status), AfterPark::Ended) {
                return;
            }
            status.parked.store(false, Ordering::SeqCst);
            next = Instant::now();
        }
        while runner.batch_len() < runner.settings.max_batch {
            match commands.try_recv() {
                Ok(c) => runner.push_command(c),
                Err(_) => break,
            }
        }
        runner.tick();
        if !runner.settings.extra_tick.is_zero() {
            std::thread::sleep(runner.settings.extra_tick);
        }
        // The tick's work ends here. The hand-off below wakes the I/O thread,
        // which the kernel often runs at once on this thread's core while
        // it sends the frames: timing that too measured the connections'
        // burst (up to 9 ms at 1,000 clients on 2 cores), not the tick.
        let elapsed = started.elapsed();
        publish(&mut runner, &sockets, &status);
        let m = &runner.metrics;
        m.queue_length.set(commands.len() as i64);
        m.tick_duration.observe(elapsed.as_secs_f64());
        if elapsed > period {
            m.ticks_overrun.inc();
        }
        status.last_tick_ms.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);

        next += period;
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        } else if now - next > period * 4 {
            // Far behind (machine stalled): skip ahead rather than burst-tick.
            next = now;
        }
    }
}

/// Hands the frames produced so far to the I/O thread (one wake-up per
/// tick) and publishes the figures the rest of the server reads.
fn publish(runner: &mut ZoneRunner, sockets: &Sockets, status: &ZoneStatus) {
    let batch = runner.take_deliveries();
    if !batch.is_empty() {
        sockets.hand_over(batch);
    }
    runner.metrics.players.set(runner.clients.len() as i64);
    runner.metrics.tick_number.set(runner.zone.tick_number() as i64);
    status.players.store(runner.clients.len(), Ordering::Relaxed);
    status.tick.store(runner.zone.tick_number(), Ordering::Relaxed);
}

enum AfterPark {
    Unparked,
    /// Redirected or stopped: the zone's thread ends.
    Ended,
}

/// A released zone waits, without ticking, to be redirected (the new owner
/// runs it) or unparked (the hand-off was abandoned).
fn park(
    runner: &mut ZoneRunner,
    commands: &mut mpsc::Receiver<Command>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    sockets: &Sockets,
    status: &ZoneStatus,
) -> AfterPark {
    let (name, tick) = (runner.zone.config().name.clone(), runner.zone.tick_number());
    tracing::info!(zone = %name, tick, "zone released; parked until redirected or resumed");
    loop {
        let Some(c) = control.blocking_recv() else { return AfterPark::Ended };
        let ended = match c {
            Control::Unpark => {
                tracing::info!(zone = %name, tick, "hand-off abandoned; the zone ticks here again");
                return AfterPark::Unparked;
            }
            Control::Redirect { address, reply } => {
                // Commands that slipped in after the release were never ticked, so never acknowledged.
                while let Ok(c) = commands.try_recv() {
                    runner.refuse_moving(&c);
                }
                let told = runner.redirect(&address);
                tracing::info!(zone = %name, tick, players = told, to = %address, "zone redirected");
                let _ = reply.send(told);
                true
            }
            Control::Stop => true,
            Control::Superseded => {
                runner.superseded();
                true
            }
            Control::Attach { link, .. } => {
                link.conn.close(CloseCode::Draining, "the zone is moving to another server; log in again");
                runner.metrics.disconnected(CloseCode::Draining.as_str());
                false
            }
            Control::Release { reply } => {
                let _ = reply.send(Ok(tick));
                false
            }
            other => {
                // Detach, broadcast and kick work as usual; none of them ends a parked zone.
                runner.control(other);
                false
            }
        };
        publish(runner, sockets, status);
        if ended {
            return AfterPark::Ended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ConnState;
    use crate::metrics::Metrics;
    use respawn_proto::server_message::Body;
    use respawn_sim::ZoneConfig;

    fn runner(metrics: &Metrics) -> ZoneRunner {
        let mut config = ZoneConfig::standard(1, "t", 1);
        config.width = 3_000;
        config.height = 3_000;
        config.obstacles.clear();
        let settings = LoopSettings {
            period: Duration::from_millis(50),
            tick_hz: 20,
            view_radius: 10_000,
            max_visible: 256,
            max_players: 3,
            max_dropped_updates: 5,
            max_batch: 100,
            server_version: "test".into(),
            resume_grace: Duration::from_secs(30),
            extra_tick: Duration::ZERO,
            replication_threads: 1,
            replicate_alone_within: REPLICATE_ALONE_WITHIN,
        };
        ZoneRunner::new(Zone::new(config).expect("zone"), settings, metrics.zone("t"), None)
    }

    fn link(id: u64, capacity: usize) -> ClientLink {
        ClientLink { conn: ConnState::new(id, capacity), protocol_version: 2 }
    }

    /// The frames handed over, per connection, as the I/O thread gets them.
    #[derive(Default)]
    struct Wire(BTreeMap<u64, Vec<Bytes>>);

    impl Wire {
        /// What `link`'s client got since last time; its socket took them all.
        fn drain(&mut self, link: &ClientLink) -> Vec<Body> {
            let frames = self.0.remove(&link.conn.id).unwrap_or_default();
            link.conn.sent(frames.len());
            frames.iter().map(|f| respawn_proto::decode_server(f).expect("server frames decode")).collect()
        }
    }

    fn attach(r: &mut ZoneRunner, player: u64, link: &ClientLink) {
        r.control(Control::Attach {
            player,
            name: format!("p{player}"),
            link: link.clone(),
            resume_token: String::new(),
            entry: Entry::Fresh,
        });
    }

    /// Runs a tick and hands its frames over, as to the I/O thread.
    fn tick(r: &mut ZoneRunner, wire: &mut Wire) {
        r.tick();
        for d in r.take_deliveries() {
            match d {
                Delivery::Frame(id, frame) => wire.0.entry(id).or_default().push(frame),
                Delivery::Close(conn, code, reason) => conn.close(code, reason),
            }
        }
    }

    /// Player 7 joined on connection 1 and ticked in: its link and its entity.
    fn player_7_in(r: &mut ZoneRunner, wire: &mut Wire) -> (ClientLink, respawn_sim::EntityId) {
        let first = link(1, 16);
        attach(r, 7, &first);
        tick(r, wire);
        let entity = r.zone().player(7).expect("joined").entity;
        (first, entity)
    }

    /// Gives the runner a persister queue (no snapshot due for an hour); its far end.
    fn persisted(r: &mut ZoneRunner) -> mpsc::Receiver<PersistMsg> {
        let (tx, rx) = crate::persist::queue();
        r.persist = Some(PersistLink::new(tx, Arc::new(PersistState::default()), Duration::from_secs(3_600)));
        rx
    }

    #[test]
    fn a_stalled_persister_pauses_the_world_without_losing_a_tick() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut rx = persisted(&mut r);
        let ran = crate::persist::QUEUE_CAPACITY as u64 - 1;
        for _ in 0..ran + 100 {
            r.tick();
        }
        assert_eq!(r.zone().tick_number(), ran, "ticks stop while the queue has no room for one more");
        assert_eq!(metrics.zone("t").ticks_paused.get(), 100);
        let mut queued = Vec::new();
        while let Ok(PersistMsg::Tick { tick, .. }) = rx.try_recv() {
            queued.push(tick);
        }
        assert_eq!(queued, (1..=ran).collect::<Vec<_>>(), "every tick that ran is queued, in order");
        r.tick();
        assert_eq!(r.zone().tick_number(), ran + 1, "the world moves on once the persister catches up");
    }

    #[test]
    fn an_empty_zones_ticks_go_to_the_persister_unattended() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut rx = persisted(&mut r);
        let mut wire = Wire::default();
        r.tick();
        r.tick();
        player_7_in(&mut r, &mut wire);
        tick(&mut r, &mut wire);
        let mut attended = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let PersistMsg::Tick { tick, attended: a, .. } = msg {
                attended.push((tick, a));
            }
        }
        let told = "the zone's start (an event), empty, the join, a player in the zone";
        assert_eq!(attended, [(1, true), (2, false), (3, true), (4, true)], "{told}");
    }

    #[test]
    fn a_kick_makes_a_character_waiting_for_its_player_leave() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut wire = Wire::default();
        let l = link(1, 16);
        attach(&mut r, 1, &l);
        tick(&mut r, &mut wire);
        r.control(Control::Detach { player: 1, conn_id: l.conn.id, left: false });
        tick(&mut r, &mut wire);
        assert!(r.zone().player(1).is_some(), "the character waits for its player");
        r.control(Control::Kick { player: 1, reason: "signed in elsewhere".into() });
        tick(&mut r, &mut wire);
        assert!(r.zone().player(1).is_none(), "and leaves when kicked (its state goes to the platform)");
    }

    #[test]
    fn join_gets_welcome_then_updates() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut wire = Wire::default();
        let l = link(1, 16);
        attach(&mut r, 1, &l);
        tick(&mut r, &mut wire);
        let got = wire.drain(&l);
        assert!(matches!(got[0], Body::Welcome(_)), "{got:?}");
        assert!(matches!(got[1], Body::Update(ref u) if !u.entered.is_empty() && u.you.is_some()));
        assert_eq!(r.clients(), 1);
    }

    #[test]
    fn slow_client_loses_updates_then_is_cut_off_without_affecting_others() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut wire = Wire::default();
        let fast = link(1, 4);
        // Its socket never takes a frame.
        let slow = link(2, 2);
        attach(&mut r, 1, &fast);
        attach(&mut r, 2, &slow);
        let mut fast_updates = 0;
        for _ in 0..40 {
            r.push_command(Command {
                player: 1,
                seq: 1,
                kind: CommandKind::Move { velocity: respawn_sim::Point::new(5, 5) },
            });
            tick(&mut r, &mut wire);
            fast_updates += wire.drain(&fast).iter().filter(|b| matches!(b, Body::Update(_))).count();
        }
        assert_eq!(fast_updates, 40, "the fast client got every tick's update");
        let (code, _) = slow.conn.close_reason().expect("slow client was closed");
        assert_eq!(code, CloseCode::TooSlow);
        assert!(slow.conn.is_closing());
        assert!(r.zone().player(2).is_none(), "the cut-off player left the zone");
        assert_eq!(r.clients(), 1);
        let dropped = r.metrics.updates_dropped.get();
        assert!(dropped >= 5, "dropped updates are counted: {dropped}");
    }

    #[test]
    fn reattach_replaces_the_old_connection_and_keeps_the_character() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut wire = Wire::default();
        let (first, entity) = player_7_in(&mut r, &mut wire);
        let second = link(2, 16);
        attach(&mut r, 7, &second);
        // A late detach of the old connection must not remove the player.
        r.control(Control::Detach { player: 7, conn_id: 1, left: true });
        tick(&mut r, &mut wire);
        assert_eq!(first.conn.close_reason().map(|c| c.0), Some(CloseCode::Replaced));
        assert_eq!(r.zone().player(7).map(|p| p.entity), Some(entity));
        assert!(matches!(wire.drain(&second)[0], Body::Welcome(ref w) if w.entity_id == entity));
    }

    #[test]
    fn a_join_behind_the_same_players_leave_in_one_tick_starts_after_it() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let mut wire = Wire::default();
        let (_first, entity) = player_7_in(&mut r, &mut wire);
        // The player leaves, and joins again before the tick that applies the leave.
        r.control(Control::Detach { player: 7, conn_id: 1, left: true });
        let second = link(2, 16);
        attach(&mut r, 7, &second);
        tick(&mut r, &mut wire);
        let welcome =
            wire.drain(&second).into_iter().find_map(|b| if let Body::Welcome(w) = b { Some(w) } else { None });
        let welcome = welcome.expect("the second join is welcomed, not refused");
        assert!(!welcome.resumed, "the character it had left is not resumed");
        assert_ne!(r.zone().player(7).map(|p| p.entity), Some(entity), "a new stay, after the leave");
    }

    #[test]
    fn full_zone_refuses_more_players() {
        let metrics = Metrics::new("test");
        let mut r = runner(&metrics);
        let links: Vec<_> = (1..=4).map(|i| link(i, 16)).collect();
        for (i, l) in links.iter().enumerate() {
            attach(&mut r, i as u64 + 1, l);
        }
        tick(&mut r, &mut Wire::default());
        assert_eq!(r.clients(), 3);
        assert_eq!(links[3].conn.close_reason().map(|c| c.0), Some(CloseCode::ZoneFull));
    }

    /// A crowd of `players` moving about, each on its own link of `protocol_version`,
    /// replicated on `threads` threads; the same seed gives the same world.
    fn crowd(metrics: &Metrics, players: u64, threads: usize, protocol_version: u32) -> (ZoneRunner, Vec<ClientLink>) {
        let mut r = runner(metrics);
        r.settings.max_players = players as usize;
        r.settings.view_radius = 800;
        r.settings.max_visible = 32;
        r.settings.replication_threads = threads;
        // Split whatever the time: the frames are compared with one thread's.
        r.settings.replicate_alone_within = Duration::ZERO;
        let mut links = Vec::new();
        for player in 1..=players {
            let mut l = link(player, 64);
            l.protocol_version = protocol_version;
            attach(&mut r, player, &l);
            links.push(l);
        }
        (r, links)
    }

    /// Every player walks its own way, turning with the tick.
    fn walk(r: &mut ZoneRunner, players: u64) {
        let turn = r.zone().tick_number() as i32 / 7;
        for player in 1..=players {
            let velocity = respawn_sim::Point::new((player as i32 + turn) % 9 - 4, (player as i32 * 3 + turn) % 7 - 3);
            r.push_command(Command { player, seq: 0, kind: CommandKind::Move { velocity } });
        }
    }

    #[test]
    fn replication_split_over_threads_sends_every_client_the_same_frames() {
        let metrics = Metrics::new("test");
        let players = 2 * MIN_CLIENTS_PER_THREAD as u64 + 50;
        let (mut one, one_links) = crowd(&metrics, players, 1, 2);
        let (mut three, three_links) = crowd(&metrics, players, 3, 2);
        let (mut one_wire, mut three_wire) = (Wire::default(), Wire::default());
        for _ in 0..5 {
            for (r, wire) in [(&mut one, &mut one_wire), (&mut three, &mut three_wire)] {
                walk(r, players);
                tick(r, wire);
            }
        }
        let mut moved = 0;
        for (a, b) in one_links.iter().zip(&three_links) {
            let (a, b) = (one_wire.drain(a), three_wire.drain(b));
            assert_eq!(a, b, "a client's frames differ with the replication on three threads");
            moved += b.iter().filter(|m| matches!(m, Body::Update(u) if !u.moved_ids.is_empty())).count();
        }
        assert!(moved > players as usize, "the crowd moved ({moved} updates with moves)");
        assert_eq!(three.clients(), players as usize);
    }

    #[test]
    fn replication_stays_on_the_tick_thread_while_one_thread_is_quick_enough() {
        let metrics = Metrics::new("test");
        let players = 2 * MIN_CLIENTS_PER_THREAD as u64 + 50;
        let (mut r, _links) = crowd(&metrics, players, 3, 2);
        r.settings.replicate_alone_within = Duration::from_secs(3600);
        assert_eq!(r.replication_parts(), 2, "split while its cost is unknown (at least 250 clients a thread)");
        let mut wire = Wire::default();
        walk(&mut r, players);
        tick(&mut r, &mut wire);
        assert_eq!(r.replication_parts(), 1, "a tick's replication is far quicker than an hour");
        r.settings.replicate_alone_within = Duration::ZERO;
        assert_eq!(r.replication_parts(), 2, "split again once one thread would take too long");
    }

    /// Positions a client pieces together from its updates.
    fn picture(frames: &[Body], seen: &mut BTreeMap<u32, (i32, i32)>) {
        for frame in frames {
            let Body::Update(u) = frame else { continue };
            for e in u.entered.iter().chain(&u.changed) {
                seen.insert(e.id, (e.x, e.y));
            }
            for m in u.moves().expect("well-formed moves") {
                let at = seen.get_mut(&m.id).expect("moved entities were entered before");
                *at = (at.0 + m.dx, at.1 + m.dy);
            }
            for id in &u.left {
                seen.remove(id);
            }
        }
    }

    #[test]
    fn packed_moves_add_up_to_the_positions_protocol_1_sends_whole() {
        let metrics = Metrics::new("test");
        let players = 40;
        let (mut whole, whole_links) = crowd(&metrics, players, 1, 1);
        let (mut packed, packed_links) = crowd(&metrics, players, 1, 2);
        let (mut whole_wire, mut packed_wire) = (Wire::default(), Wire::default());
        let mut whole_seen = vec![BTreeMap::new(); players as usize];
        let mut packed_seen = vec![BTreeMap::new(); players as usize];
        let (mut whole_bytes, mut packed_bytes) = (0, 0);
        for _ in 0..30 {
            for (r, wire) in [(&mut whole, &mut whole_wire), (&mut packed, &mut packed_wire)] {
                walk(r, players);
                tick(r, wire);
            }
            for i in 0..players as usize {
                let (w, p) = (whole_wire.drain(&whole_links[i]), packed_wire.drain(&packed_links[i]));
                whole_bytes += w.iter().map(|m| respawn_proto::encode_server(m.clone()).len()).sum::<usize>();
                packed_bytes += p.iter().map(|m| respawn_proto::encode_server(m.clone()).len()).sum::<usize>();
                assert!(
                    w.iter().all(|m| !matches!(m, Body::Update(u) if !u.moved_ids.is_empty())),
                    "protocol 1 gets no packed moves"
                );
                picture(&w, &mut whole_seen[i]);
                picture(&p, &mut packed_seen[i]);
                assert_eq!(whole_seen[i], packed_seen[i], "client {i} sees the same field either way");
            }
        }
        assert!(packed_bytes * 2 < whole_bytes, "packed {packed_bytes} B vs whole {whole_bytes} B");
    }
}
