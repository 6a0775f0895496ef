//! One WebSocket connection: the join handshake, then a reader that turns
//! frames into zone commands and a writer that drains the client's outbound
//! queue. Everything a peer sends is untrusted: each violation is counted and
//! answered with a close code, and never affects other connections.

use respawn_store::ratelimit::{Decision, LocalGcra, Quota};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use respawn_api::players::CharacterTicket;
use respawn_proto::{self as proto, client_message::Body, CloseCode, DecodeError, ErrorCode};
use respawn_sim::{Character, Command, CommandKind, ItemKind, Point};
use tokio::sync::mpsc;

use crate::link::{ClientLink, ConnState};
use crate::server::state::{Characters, ServerState, ZoneHandle};
use crate::wire;
use crate::zone_loop::{Control, Entry};

/// What one read from the socket amounted to.
enum Incoming {
    Body(Body),
    /// A pong to one of our pings, carrying its send time.
    Pong(Bytes),
    /// Nothing to act on (a ping the library answers itself).
    Nothing,
    Closed,
    Violation(CloseCode, String),
}

fn classify(read: Option<Result<Message, axum::Error>>, zone: Option<&ZoneHandle>) -> Incoming {
    let msg = match read {
        None => return Incoming::Closed,
        Some(Err(e)) => {
            let text = e.to_string();
            if text.contains("too long") || text.contains("Space limit") {
                return Incoming::Violation(
                    CloseCode::TooBig,
                    format!("frame larger than {} bytes", proto::MAX_CLIENT_FRAME_BYTES),
                );
            }
            return Incoming::Closed;
        }
        Some(Ok(msg)) => msg,
    };
    match msg {
        Message::Binary(bytes) => {
            if let Some(z) = zone {
                z.metrics.packets_in.inc();
                z.metrics.bytes_in.inc_by(bytes.len() as u64);
            }
            match proto::decode_client(&bytes) {
                Ok(body) => Incoming::Body(body),
                Err(e @ DecodeError::Malformed(_)) => Incoming::Violation(CloseCode::InvalidPayload, e.to_string()),
                Err(e @ DecodeError::UnknownMessage) => Incoming::Violation(CloseCode::UnknownMessage, e.to_string()),
            }
        }
        Message::Text(_) => {
            Incoming::Violation(CloseCode::UnsupportedData, "text frames are not accepted; send binary protobuf".into())
        }
        Message::Pong(payload) => Incoming::Pong(payload),
        Message::Ping(_) => Incoming::Nothing,
        Message::Close(_) => Incoming::Closed,
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn close_frame(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code: code.code(), reason: reason[..end].into() }))
}

async fn refuse(state: &ServerState, mut socket: WebSocket, code: CloseCode, reason: String) {
    state.metrics.client_error(code.as_str());
    tracing::debug!(code = code.code(), reason = %reason, "connection refused");
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close_frame(code, &reason))).await;
}

/// Serves one upgraded connection until it ends.
pub async fn serve(mut socket: WebSocket, state: Arc<ServerState>) {
    state.metrics.connections().inc();
    let _gauge = ConnGauge(state.clone());
    let limits = &state.config.limits;
    let deadline = Instant::now() + limits.join_timeout;
    let join = loop {
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), socket.recv()) => r,
            _ = state.shutdown.cancelled() => return,
        };
        let Ok(read) = read else {
            return refuse(&state, socket, CloseCode::JoinTimeout, "no join message in time".into()).await;
        };
        match classify(read, None) {
            Incoming::Body(Body::Join(join)) => break join,
            Incoming::Body(_) => {
                return refuse(&state, socket, CloseCode::JoinRequired, "the first message must be join".into()).await
            }
            Incoming::Violation(code, reason) => return refuse(&state, socket, code, reason).await,
            Incoming::Closed => return,
            Incoming::Pong(_) | Incoming::Nothing => continue,
        }
    };
    let speaks = state.config.compat.protocols();
    if !speaks.contains(&join.protocol_version) {
        let (oldest, newest) = speaks.into_inner();
        let reason =
            format!("server speaks protocol versions {oldest} to {newest}, client sent {}", join.protocol_version);
        return refuse(&state, socket, CloseCode::UnsupportedProtocolVersion, reason).await;
    }
    let who = match authenticate(&state, &join).await {
        Ok(who) => who,
        Err(reason) => return refuse(&state, socket, CloseCode::InvalidToken, reason).await,
    };
    let (zone, entry) = match admit(&state, &join, &who) {
        Ok(admitted) => admitted,
        Err((code, reason)) => {
            give_back(&state, who.taken);
            return refuse(&state, socket, code, reason).await;
        }
    };
    let Who { player, name, session_ends_ms, taken } = who;

    let conn = ConnState::new(state.next_conn_id(), state.shutdown.child_token());
    let (out_tx, out_rx) = mpsc::channel(limits.client_send_buffer);
    let link = ClientLink { conn: conn.clone(), out: out_tx.clone(), protocol_version: join.protocol_version };
    let resume_token = issue_resume_token(&state, player, &name, &zone.name, session_ends_ms);
    if zone.control.send(Control::Attach { player, name: name.clone(), link, resume_token, entry }).is_err() {
        give_back(&state, taken);
        return refuse(&state, socket, CloseCode::GoingAway, "zone is stopping".into()).await;
    }
    tracing::debug!(player, name = %name, zone = %zone.name, conn = conn.id, "player joined");

    let (sink, mut stream) = socket.split();
    let reader = read_loop(&mut stream, &state, &zone, &conn, player, out_tx);
    let writer = write_loop(sink, &state, &zone, &conn, out_rx);
    let (left, ()) = tokio::join!(reader, writer);
    let _ = zone.control.send(Control::Detach { player, conn_id: conn.id, left });
    // Finish the closing handshake: read until the client's close (or a
    // second), so dropping the socket cannot reset it before the client has
    // read our close frame.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    tracing::debug!(player, zone = %zone.name, conn = conn.id, reason = ?conn.close_reason(), "player left");
}

/// Who is joining.
struct Who {
    player: u64,
    name: String,
    /// When this sign-in's resume tokens stop working (Unix ms): resuming
    /// never moves it.
    session_ends_ms: u64,
    /// The resume session its token took (a join by session token: none).
    taken: Option<respawn_store::ResumeSession>,
}

/// Whether the server lets `who` in now, into which zone, with what
/// character; or the close code and reason.
fn admit(state: &ServerState, join: &proto::Join, who: &Who) -> Result<(Arc<ZoneHandle>, Entry), (CloseCode, String)> {
    if state.bans.contains(who.player) {
        return Err((CloseCode::Banned, "this player is banned".into()));
    }
    let Some(zone) = state.zone(&join.zone) else {
        let reason = format!("no zone named {:?}; this server hosts {}", join.zone, state.zone_names());
        return Err((CloseCode::UnknownZone, reason));
    };
    if state.draining.load(Ordering::SeqCst) {
        return Err((CloseCode::Draining, "server is draining; connect to another server".into()));
    }
    if zone.status.parked.load(Ordering::SeqCst) {
        return Err((CloseCode::Draining, format!("zone {} is moving to another server; log in again", zone.name)));
    }
    let entry =
        entry(state, join, who.player, who.taken.is_some()).map_err(|r| (CloseCode::CharacterUnavailable, r))?;
    Ok((zone, entry))
}

/// A join refused after its resume token was taken gives it back, so the
/// client can try again with it (a token is spent only by a join that got in).
fn give_back(state: &ServerState, taken: Option<respawn_store::ResumeSession>) {
    let Some(session) = taken else { return };
    let sessions = state.stores.sessions.clone();
    tokio::spawn(async move {
        if let Err(e) = sessions.put(session).await {
            tracing::debug!(error = %e, "resume token not given back");
        }
    });
}

/// Who is joining: from a resume token (tried first: it is taken, and
/// spent once the join gets in) or a session token.
async fn authenticate(state: &ServerState, join: &proto::Join) -> Result<Who, String> {
    let mut resume_problem = None;
    if !join.resume_token.is_empty() {
        let Some((player, secret)) = respawn_store::parse_resume_token(&join.resume_token) else {
            return Err("malformed resume token; log in again".into());
        };
        match state.stores.sessions.take(player, &respawn_token::hash_secret(secret)).await {
            Ok(Some(s)) if s.zone == join.zone => {
                let (player, name, session_ends_ms) = (s.player_id, s.name.clone(), s.expires_at_ms);
                return Ok(Who { player, name, session_ends_ms, taken: Some(s) });
            }
            Ok(Some(s)) => {
                give_back(state, Some(s));
                resume_problem = Some("the resume token is for another zone".to_owned());
            }
            Ok(None) => resume_problem = Some("unknown, used or expired resume token".to_owned()),
            Err(e) => resume_problem = Some(format!("cannot check the resume token now ({})", e.as_str())),
        }
    }
    if join.token.is_empty() {
        if let Some(problem) = resume_problem {
            return Err(format!("{problem}; log in again"));
        }
    }
    let claims = state
        .token_key
        .verify(&join.token, respawn_api::clock::unix_secs())
        .map_err(|e| format!("invalid token: {e}"))?;
    let ttl_ms = state.config.resume_token_ttl.as_millis() as u64;
    let now_ms = respawn_api::clock::unix_ms();
    let session_ends_ms = now_ms.saturating_add(ttl_ms).min(claims.expires_at.saturating_mul(1_000));
    Ok(Who { player: claims.player_id, name: claims.name, session_ends_ms, taken: None })
}

/// What character `player` may bring in: on a server whose characters the
/// platform keeps, the one of its ticket (or, resuming without one, only
/// the character still in the zone).
fn entry(state: &ServerState, join: &proto::Join, player: u64, resuming: bool) -> Result<Entry, String> {
    match state.characters {
        Characters::Fresh => Ok(Entry::Fresh),
        Characters::KeptByPlatform if resuming && join.character_ticket.is_empty() => Ok(Entry::ResumeOnly),
        Characters::KeptByPlatform => CharacterTicket::open(
            &state.token_key,
            &join.character_ticket,
            respawn_api::clock::unix_secs(),
            player,
            &join.zone,
        )
        .map(|ticket| Entry::Kept(character_of(&ticket)))
        .map_err(|e| e.to_string()),
    }
}

/// The simulation's character from a platform's ticket (item codes this
/// build does not know are left out).
fn character_of(ticket: &CharacterTicket) -> Character {
    Character {
        incarnation: ticket.incarnation,
        level: ticket.level,
        xp: ticket.xp,
        gold: ticket.gold,
        inventory: ticket
            .inventory
            .iter()
            .filter_map(|(code, count)| Some((ItemKind::from_code(u8::try_from(*code).ok()?)?, *count)))
            .collect(),
        place: ticket.place.as_ref().map(|p| (p.zone.clone(), Point::new(p.x, p.y))),
    }
}

/// A new resume token for this connection (`<player>.<secret>`), stored
/// in the background as the player's only one, ending with its sign-in's
/// `session_ends_ms`: a failed store only means the client falls back to
/// its session token. Empty if the kernel gave no random bytes.
fn issue_resume_token(state: &ServerState, player: u64, name: &str, zone: &str, session_ends_ms: u64) -> String {
    let Ok(secret) = respawn_token::random_hex(16) else { return String::new() };
    let session = respawn_store::ResumeSession {
        player_id: player,
        name: name.to_owned(),
        zone: zone.to_owned(),
        secret_hash: respawn_token::hash_secret(&secret),
        expires_at_ms: session_ends_ms,
    };
    let sessions = state.stores.sessions.clone();
    tokio::spawn(async move {
        if let Err(e) = sessions.put(session).await {
            tracing::debug!(error = %e, "resume token not stored");
        }
    });
    format!("{player}.{secret}")
}

/// Decrements the connection gauge however `serve` ends.
struct ConnGauge(Arc<ServerState>);

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.0.metrics.connections().dec();
    }
}

/// The player's command limit (GCRA, the algorithm the platform server runs
/// in Redis): `rate` frames per second, bursts up to `rate`. It is kept per
/// player across reconnections in the server state; every command of a player
/// arrives at the one server it plays on, so no Redis round trip is needed.
/// More than `rate` refused frames within one second is a flood.
struct RateLimit<'a> {
    state: &'a ServerState,
    player: u64,
    gcra: LocalGcra,
    rate: u32,
    window_start: Instant,
    refused_in_window: u32,
}

enum Verdict {
    Allow,
    Refuse,
    Flood,
}

impl<'a> RateLimit<'a> {
    /// The player's limit as the last connection left it, or a fresh one.
    fn take(state: &'a ServerState, player: u64) -> Self {
        let rate = state.config.limits.commands_per_second;
        let kept = state.command_limits.lock().ok().and_then(|mut l| l.remove(&player));
        let gcra = kept.unwrap_or_else(|| LocalGcra::new(Quota::per_second(rate)));
        Self { state, player, gcra, rate, window_start: Instant::now(), refused_in_window: 0 }
    }

    fn check(&mut self, now: Instant) -> Verdict {
        if self.gcra.check(now) == Decision::Allowed {
            return Verdict::Allow;
        }
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.refused_in_window = 0;
        }
        self.refused_in_window += 1;
        if self.refused_in_window > self.rate {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
    }
}

/// Limits kept for players who left; past this many, those idle are dropped.
const KEPT_LIMITS_BEFORE_SWEEP: usize = 10_000;

impl Drop for RateLimit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if self.gcra.idle(now) {
            return;
        }
        if let Ok(mut kept) = self.state.command_limits.lock() {
            if kept.len() >= KEPT_LIMITS_BEFORE_SWEEP {
                kept.retain(|_, g| !g.idle(now));
            }
            kept.insert(self.player, self.gcra.clone());
        }
    }
}

fn command_of(body: &Body) -> Option<(u32, CommandKind)> {
    match body {
        Body::Move(m) => Some((m.seq, CommandKind::Move { velocity: Point::new(m.vx, m.vy) })),
        Body::Attack(a) => Some((a.seq, CommandKind::Attack { target: a.target })),
        Body::Pickup(p) => Some((p.seq, CommandKind::Pickup { item: p.item })),
        _ => None,
    }
}

async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    state: &ServerState,
    zone: &ZoneHandle,
    conn: &ConnState,
    player: u64,
    out: mpsc::Sender<Bytes>,
) -> bool {
    let cancel = conn.cancel_token();
    let mut limit = RateLimit::take(state, player);
    let m = &zone.metrics;
    loop {
        let read = tokio::select! {
            r = stream.next() => r,
            _ = cancel.cancelled() => return false,
        };
        let body = match classify(read, Some(zone)) {
            Incoming::Body(body) => body,
            Incoming::Pong(payload) => {
                if let Ok(sent) = <[u8; 8]>::try_from(payload.as_ref()) {
                    let sent = Duration::from_micros(u64::from_le_bytes(sent));
                    if let Some(rtt) = state.epoch.elapsed().checked_sub(sent) {
                        m.rtt.observe(rtt.as_secs_f64());
                    }
                }
                continue;
            }
            Incoming::Nothing => continue,
            Incoming::Closed => {
                conn.close(CloseCode::Normal, "client closed");
                return false;
            }
            Incoming::Violation(code, reason) => {
                state.metrics.client_error(code.as_str());
                conn.close(code, reason);
                return false;
            }
        };
        match limit.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                m.rejected("rate_limited");
                if let Some((seq, _)) = command_of(&body) {
                    let _ = out.try_send(wire::rejected(seq, "rate_limited"));
                }
                continue;
            }
            Verdict::Flood => {
                state.metrics.client_error(CloseCode::PolicyViolation.as_str());
                conn.close(CloseCode::PolicyViolation, "command flood");
                return false;
            }
        }
        match body {
            Body::Ping(p) => {
                let _ = out.try_send(wire::pong(p.client_time, zone.status.tick.load(Ordering::Relaxed)));
            }
            Body::Join(_) => {
                let _ = out.try_send(wire::error(ErrorCode::AlreadyJoined, "already joined; join is sent once"));
            }
            Body::Leave(_) => {
                conn.close(CloseCode::Normal, "player left");
                return true;
            }
            other => {
                let Some((seq, kind)) = command_of(&other) else { continue };
                if zone.status.parked.load(Ordering::Relaxed) {
                    // Handed over at a tick boundary: a command now would be lost, so it is refused.
                    m.rejected("zone_moving");
                    let _ = out.try_send(wire::rejected(seq, "zone_moving"));
                    continue;
                }
                match zone.commands.try_send(Command { player, seq, kind }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        m.rejected("queue_full");
                        let _ = out.try_send(wire::rejected(seq, "queue_full"));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        conn.close(CloseCode::GoingAway, "zone stopped");
                        return false;
                    }
                }
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    state: &ServerState,
    zone: &ZoneHandle,
    conn: &ConnState,
    mut out: mpsc::Receiver<Bytes>,
) {
    let cancel = conn.cancel_token();
    let limits = &state.config.limits;
    let mut ping = tokio::time::interval(limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let msg = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            frame = out.recv() => match frame {
                Some(frame) => Message::Binary(frame),
                None => {
                    conn.close(CloseCode::GoingAway, "zone stopped");
                    break;
                }
            },
            _ = ping.tick() => {
                let micros = state.epoch.elapsed().as_micros() as u64;
                Message::Ping(Bytes::copy_from_slice(&micros.to_le_bytes()))
            }
        };
        match tokio::time::timeout(limits.write_timeout, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                conn.close(CloseCode::Normal, "connection lost");
                break;
            }
            Err(_) => {
                conn.close(CloseCode::TooSlow, "write timed out");
                zone.metrics.disconnected(CloseCode::TooSlow.as_str());
                break;
            }
        }
    }
    // Deliver what was already queued (a kick or shutdown notice) before closing.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(frame) = out.try_recv() {
            if sink.send(Message::Binary(frame)).await.is_err() {
                break;
            }
        }
    })
    .await;
    let (code, reason) = conn.close_reason().unwrap_or((CloseCode::GoingAway, "server shutting down".to_owned()));
    if code == CloseCode::GoingAway {
        zone.metrics.disconnected(code.as_str());
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close_frame(code, &reason))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
