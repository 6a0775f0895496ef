//! One player's connection, as the protocol sees it: the join (checked in a
//! task: tokens and stores are async), then each message a playing client
//! sends, turned into zone commands. The socket itself is the I/O thread's
//! ([`crate::sockets`]). Everything a peer sends is untrusted: each
//! violation is counted and answered with a close code, and never affects
//! other connections.

use respawn_store::ratelimit::{Decision, LocalGcra, Quota};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use respawn_api::players::CharacterTicket;
use respawn_proto::{self as proto, client_message::Body, CloseCode, DecodeError, ErrorCode};
use respawn_sim::{Character, Command, CommandKind, ItemKind, Point};
use tokio::sync::mpsc;
use tungstenite::Message;

use crate::link::{ClientLink, ConnState};
use crate::server::state::{Characters, ServerState, ZoneHandle};
use crate::wire;
use crate::zone_loop::{Control, Entry};

/// What one message read from a socket amounts to.
pub(crate) enum Incoming {
    Body(Body),
    /// A pong to one of our pings, carrying its send time.
    Pong(Bytes),
    /// Nothing to act on (a ping the library answers itself).
    Nothing,
    Closed,
    Violation(CloseCode, String),
}

pub(crate) fn classify(read: Result<Message, tungstenite::Error>, zone: Option<&ZoneHandle>) -> Incoming {
    let msg = match read {
        Ok(msg) => msg,
        Err(tungstenite::Error::Capacity(_)) => {
            return Incoming::Violation(
                CloseCode::TooBig,
                format!("frame larger than {} bytes", proto::MAX_CLIENT_FRAME_BYTES),
            )
        }
        Err(_) => return Incoming::Closed,
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
        Message::Ping(_) | Message::Frame(_) => Incoming::Nothing,
        Message::Close(_) => Incoming::Closed,
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
pub(crate) fn close_frame(code: CloseCode, reason: &str) -> tungstenite::protocol::CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    tungstenite::protocol::CloseFrame { code: code.code().into(), reason: reason[..end].into() }
}

/// Checks a join and, if the server lets the player in, attaches it to its
/// zone: the connection plays on with the queue the zone fills; if not, it
/// is closed with the code and reason.
pub(crate) async fn join(
    state: Arc<ServerState>,
    conn: Arc<ConnState>,
    join: proto::Join,
) -> Result<Playing, (CloseCode, String)> {
    attach(&state, &conn, &join).await.inspect_err(|(code, reason)| {
        state.metrics.client_error(code.as_str());
        tracing::debug!(code = code.code(), reason = %reason, "connection refused");
    })
}

async fn attach(
    state: &ServerState,
    conn: &Arc<ConnState>,
    join: &proto::Join,
) -> Result<Playing, (CloseCode, String)> {
    let speaks = state.config.compat.protocols();
    if !speaks.contains(&join.protocol_version) {
        let (oldest, newest) = speaks.into_inner();
        let reason =
            format!("server speaks protocol versions {oldest} to {newest}, client sent {}", join.protocol_version);
        return Err((CloseCode::UnsupportedProtocolVersion, reason));
    }
    let who = authenticate(state, join).await.map_err(|reason| (CloseCode::InvalidToken, reason))?;
    let (zone, entry) = admit(state, join, &who).inspect_err(|_| give_back(state, who.taken.clone()))?;
    let Who { player, name, session_ends_ms, taken } = who;
    let link = ClientLink { conn: conn.clone(), protocol_version: join.protocol_version };
    let resume_token = issue_resume_token(state, player, &name, &zone.name, session_ends_ms);
    if zone.control.send(Control::Attach { player, name: name.clone(), link, resume_token, entry }).is_err() {
        give_back(state, taken);
        return Err((CloseCode::GoingAway, "zone is stopping".into()));
    }
    tracing::debug!(player, name = %name, zone = %zone.name, conn = conn.id, "player joined");
    let limit = RateLimit::take(state, player);
    Ok(Playing { player, zone, limit })
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

/// The player's command limit (GCRA, the algorithm the platform server runs
/// in Redis): `rate` frames per second, bursts up to `rate`. It is kept per
/// player across reconnections in the server state; every command of a player
/// arrives at the one server it plays on, so no Redis round trip is needed.
/// More than `rate` refused frames within one second is a flood.
struct RateLimit {
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

impl RateLimit {
    /// The player's limit as the last connection left it, or a fresh one.
    fn take(state: &ServerState, player: u64) -> Self {
        let rate = state.config.limits.commands_per_second;
        let kept = state.command_limits.lock().ok().and_then(|mut l| l.remove(&player));
        let gcra = kept.unwrap_or_else(|| LocalGcra::new(Quota::per_second(rate)));
        Self { player, gcra, rate, window_start: Instant::now(), refused_in_window: 0 }
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

    /// Kept for the player's next connection, unless it is full again.
    fn give_back(self, state: &ServerState) {
        let now = Instant::now();
        if self.gcra.idle(now) {
            return;
        }
        if let Ok(mut kept) = state.command_limits.lock() {
            if kept.len() >= KEPT_LIMITS_BEFORE_SWEEP {
                kept.retain(|_, g| !g.idle(now));
            }
            kept.insert(self.player, self.gcra);
        }
    }
}

/// Limits kept for players who left; past this many, those idle are dropped.
const KEPT_LIMITS_BEFORE_SWEEP: usize = 10_000;

fn command_of(body: &Body) -> Option<(u32, CommandKind)> {
    match body {
        Body::Move(m) => Some((m.seq, CommandKind::Move { velocity: Point::new(m.vx, m.vy) })),
        Body::Attack(a) => Some((a.seq, CommandKind::Attack { target: a.target })),
        Body::Pickup(p) => Some((p.seq, CommandKind::Pickup { item: p.item })),
        _ => None,
    }
}

/// A connection whose player is in a zone.
pub(crate) struct Playing {
    pub player: u64,
    pub zone: Arc<ZoneHandle>,
    limit: RateLimit,
}

/// What a playing connection does after a message.
pub(crate) enum Next {
    Continue,
    /// Close with this code and reason; `left` when the player left on purpose.
    Close {
        code: CloseCode,
        reason: String,
        left: bool,
    },
}

impl Playing {
    /// Acts on one message from the client; answers go through `reply`.
    pub(crate) fn on_message(&mut self, state: &ServerState, incoming: Incoming, reply: &mut dyn FnMut(Bytes)) -> Next {
        let m = &self.zone.metrics;
        let body = match incoming {
            Incoming::Body(body) => body,
            Incoming::Pong(payload) => {
                if let Ok(sent) = <[u8; 8]>::try_from(payload.as_ref()) {
                    let sent = Duration::from_micros(u64::from_le_bytes(sent));
                    if let Some(rtt) = state.epoch.elapsed().checked_sub(sent) {
                        m.rtt.observe(rtt.as_secs_f64());
                    }
                }
                return Next::Continue;
            }
            Incoming::Nothing => return Next::Continue,
            Incoming::Closed => {
                return Next::Close { code: CloseCode::Normal, reason: "client closed".into(), left: false }
            }
            Incoming::Violation(code, reason) => {
                state.metrics.client_error(code.as_str());
                return Next::Close { code, reason, left: false };
            }
        };
        match self.limit.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                m.rejected("rate_limited");
                if let Some((seq, _)) = command_of(&body) {
                    reply(wire::rejected(seq, "rate_limited"));
                }
                return Next::Continue;
            }
            Verdict::Flood => {
                state.metrics.client_error(CloseCode::PolicyViolation.as_str());
                return Next::Close { code: CloseCode::PolicyViolation, reason: "command flood".into(), left: false };
            }
        }
        match body {
            Body::Ping(p) => reply(wire::pong(p.client_time, self.zone.status.tick.load(Ordering::Relaxed))),
            Body::Join(_) => reply(wire::error(ErrorCode::AlreadyJoined, "already joined; join is sent once")),
            Body::Leave(_) => return Next::Close { code: CloseCode::Normal, reason: "player left".into(), left: true },
            other => {
                let Some((seq, kind)) = command_of(&other) else { return Next::Continue };
                if self.zone.status.parked.load(Ordering::Relaxed) {
                    // Handed over at a tick boundary: a command now would be lost, so it is refused.
                    m.rejected("zone_moving");
                    reply(wire::rejected(seq, "zone_moving"));
                    return Next::Continue;
                }
                match self.zone.commands.try_send(Command { player: self.player, seq, kind }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        m.rejected("queue_full");
                        reply(wire::rejected(seq, "queue_full"));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Next::Close { code: CloseCode::GoingAway, reason: "zone stopped".into(), left: false };
                    }
                }
            }
        }
        Next::Continue
    }

    /// Leaves the zone: the character waits for its player to resume unless `left`.
    pub(crate) fn detach(self, state: &ServerState, conn_id: u64, left: bool) {
        let _ = self.zone.control.send(Control::Detach { player: self.player, conn_id, left });
        tracing::debug!(player = self.player, zone = %self.zone.name, conn = conn_id, "player left");
        self.limit.give_back(state);
    }
}
