//! A bot: a real protocol client that wanders, picks up items and fights NPCs,
//! reconnecting by itself when the server goes away.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use respawn_api::players::{GuestSignUp, PlayGrant, PlayerApi, SignIn, SignedIn};
use respawn_proto::{client_message::Body as C, server_message::Body as S, EntityKind, NoticeKind};
use respawn_sim::geom::step_towards;
use respawn_sim::rng::Rng;
use respawn_sim::Point;
use tokio_util::sync::CancellationToken;

use crate::conn::{Connection, Event};
use crate::world::World;

/// Mints a session token for `(player id, name)`.
pub type TokenSource = Arc<dyn Fn(u64, &str) -> String + Send + Sync>;

/// Tokens signed with `key`, valid for `ttl` from the moment they are minted.
pub fn signed_tokens(key: respawn_token::TokenKey, ttl: Duration) -> TokenSource {
    Arc::new(move |player_id, name: &str| {
        let now = respawn_api::clock::unix_secs();
        let claims = respawn_token::Claims { player_id, name: name.to_owned(), expires_at: now + ttl.as_secs() };
        key.sign(&claims).unwrap_or_default()
    })
}

/// How a bot gets in.
#[derive(Clone)]
pub enum Access {
    /// Straight to a zone server (`ws://host:port/ws`) with tokens minted here.
    Direct { url: String, tokens: TokenSource },
    /// Through the platform server (`host:port`): each bot makes a guest
    /// account, signs in with it and asks the platform where to play.
    Login { platform: String },
    /// Through the platform server with guest accounts made before: bot
    /// `i` signs in with device secret `i` (modulo their number), so its
    /// character is the one those accounts kept.
    Guests { platform: String, device_secrets: Arc<[String]> },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Direct { url, .. } => f.debug_struct("Direct").field("url", url).finish_non_exhaustive(),
            Access::Login { platform } => f.debug_struct("Login").field("platform", platform).finish(),
            Access::Guests { platform, device_secrets } => f
                .debug_struct("Guests")
                .field("platform", platform)
                .field("accounts", &device_secrets.len())
                .finish_non_exhaustive(),
        }
    }
}

/// A guest account's sign-in, kept fresh: made on first use, refreshed
/// before its session token runs out, and signed in to again with the
/// device secret if a refresh is refused.
#[derive(Debug, Clone)]
pub struct GuestSession {
    api: PlayerApi,
    device_secret: String,
    signed_in: SignedIn,
}

impl GuestSession {
    /// A new guest account at the platform server (`host:port`).
    pub async fn sign_up(platform: &str) -> Result<Self> {
        let api = PlayerApi::new(platform);
        let signed_in = api.guest(&GuestSignUp::default()).await?;
        let device_secret = signed_in
            .device_secret
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the guest sign-up gave no device secret"))?;
        Ok(Self { api, device_secret, signed_in })
    }

    /// A guest account made before, signed in to with its device secret.
    pub async fn sign_in(platform: &str, device_secret: &str) -> Result<Self> {
        let api = PlayerApi::new(platform);
        let signed_in = api.sign_in(&SignIn::device(device_secret)).await?;
        Ok(Self { api, device_secret: device_secret.to_owned(), signed_in })
    }

    /// The secret to sign in with again.
    pub fn device_secret(&self) -> &str {
        &self.device_secret
    }

    pub fn account_id(&self) -> u64 {
        self.signed_in.account_id
    }

    /// A session token valid for at least another minute.
    pub async fn token(&mut self) -> Result<String> {
        if self.signed_in.expires_at <= respawn_api::clock::unix_secs() + 60 {
            self.signed_in = match self.api.refresh(&self.signed_in.refresh_token).await {
                Ok(next) => next,
                Err(_) => self.api.sign_in(&SignIn::device(&self.device_secret)).await?,
            };
        }
        Ok(self.signed_in.session_token.clone())
    }

    /// Where to play `zone` now.
    pub async fn play(&mut self, zone: &str) -> Result<PlayGrant> {
        let token = self.token().await?;
        Ok(self.api.play(&token, zone).await?)
    }

    /// The session token was refused somewhere: the next [`Self::token`] gets a new one.
    fn stale(&mut self) {
        self.signed_in.expires_at = 0;
    }
}

/// Reconnecting bots spread evenly over zones, with ids `1..=count`.
#[derive(Debug)]
pub struct Fleet {
    pub stats: Arc<BotStats>,
    stop: CancellationToken,
    bots: Vec<tokio::task::JoinHandle<BotReport>>,
}

impl Fleet {
    pub fn spawn(access: Access, zones: &[String], count: u32, name_prefix: &str) -> Self {
        Self::spawn_with(access, zones, count, name_prefix, None)
    }

    /// [`Self::spawn`], with bots that walk through an exit into another
    /// zone about every `travel_every` (each after its own random share of it).
    pub fn spawn_with(
        access: Access,
        zones: &[String],
        count: u32,
        name_prefix: &str,
        travel_every: Option<Duration>,
    ) -> Self {
        let stats = Arc::new(BotStats::default());
        let stop = CancellationToken::new();
        let bots = (0..count)
            .map(|i| {
                let config = BotConfig {
                    access: access.clone(),
                    zone: zones[i as usize % zones.len().max(1)].clone(),
                    player_id: u64::from(i) + 1,
                    name: format!("{name_prefix}{}", i + 1),
                    reconnect: true,
                    travel_every,
                    source: None,
                };
                tokio::spawn(run_bot(config, stats.clone(), stop.clone()))
            })
            .collect();
        Self { stats, stop, bots }
    }

    pub fn len(&self) -> usize {
        self.bots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bots.is_empty()
    }

    /// Stops every bot (each leaves politely) and waits a little for them.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// [`Self::stop`] for a fleet that stays owned (it is empty afterwards).
    pub async fn halt(&mut self) {
        self.stop.cancel();
        for bot in std::mem::take(&mut self.bots) {
            let _ = tokio::time::timeout(Duration::from_secs(3), bot).await;
        }
    }
}

#[derive(Debug, Clone)]
pub struct BotConfig {
    pub access: Access,
    pub zone: String,
    /// The bot's player id with [`Access::Direct`]; the login assigns one otherwise.
    pub player_id: u64,
    pub name: String,
    /// Reconnect after the server closes or vanishes (`up`), or stop (`loadgen`).
    pub reconnect: bool,
    /// Walk through an exit into another zone about this often; `None`: stay
    /// in the zone (bots turn away from exits).
    pub travel_every: Option<Duration>,
    /// The local address to connect to the zone server from (any with `None`).
    pub source: Option<std::net::IpAddr>,
}

/// Counters shared by many bots.
#[derive(Debug, Default)]
pub struct BotStats {
    pub connects_ok: AtomicU64,
    pub connects_failed: AtomicU64,
    /// Of those, refused with 429 at the WebSocket upgrade: the address
    /// already held as many connections as the zone server allows one.
    pub connects_capped: AtomicU64,
    pub connected: AtomicU64,
    pub updates: AtomicU64,
    pub bytes_in: AtomicU64,
    pub commands_sent: AtomicU64,
    pub rejections: AtomicU64,
    /// Commands refused because their zone was being handed to another server.
    pub refused_moving: AtomicU64,
    /// Zone moves followed (a migrate notice, then a resume at the new address).
    pub migrations: AtomicU64,
    /// Walks into another zone followed (a travel notice, then a join there).
    pub travels: AtomicU64,
    /// Reconnections that found a new character instead of the bot's own.
    pub characters_lost: AtomicU64,
    /// Resumes after which the character had less gold, XP or inventory than before.
    pub inventories_lost: AtomicU64,
    /// Joins (a resume, or a character the platform kept) that gave back
    /// less than a server had confirmed durable: gold, XP, level or items
    /// seen in a tick the zone said was stored.
    pub progress_lost: AtomicU64,
    /// Sessions given up because the server fell silent (no message for [`SILENCE`]).
    pub silences: AtomicU64,
    rtt_micros: Mutex<Vec<u32>>,
    /// What each session had acknowledged, and by whom.
    ack_spans: Mutex<Vec<AckSpan>>,
    resumes: Mutex<Vec<Resume>>,
    /// Each travel's pause: from the travel notice to the first update in the zone it led to.
    travel_pauses: Mutex<Vec<Duration>>,
}

/// One reconnection that got the bot's character back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub player_id: u64,
    /// Newest tick the bot saw before it lost the connection.
    pub last_seen_tick: u64,
    /// Tick through which the server had confirmed the bot's commands durable.
    pub durable_tick: u64,
    /// The tick the zone's state resumed from: where its new timeline began
    /// when it was restored from stored state, else the tick at the Welcome.
    pub resumed_tick: u64,
    /// From losing the connection to the Welcome of the resumed session.
    pub gap: Duration,
    /// What the player saw frozen: from the last update before the loss to
    /// the Welcome of the resumed session.
    pub frozen: Duration,
    /// Commands the server had confirmed durable that the resumed zone lacks.
    pub lost_acknowledged: u32,
}

/// The commands one session had acknowledged: by which owner of its zone
/// (the server's address and the zone's timeline there), through which
/// durable ticks, and when (microseconds on this process's clock).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AckSpan {
    pub zone: String,
    pub server: String,
    pub timeline: u64,
    pub first_tick: u64,
    pub last_tick: u64,
    pub first_at_us: u64,
    pub last_at_us: u64,
    pub acks: u64,
}

impl AckSpan {
    fn ack(slot: &mut Option<AckSpan>, owner: (&str, &str, u64), durable_tick: u64) {
        let now = micros_now();
        match slot {
            Some(span) => {
                span.first_tick = span.first_tick.min(durable_tick);
                span.last_tick = span.last_tick.max(durable_tick);
                span.last_at_us = now;
                span.acks += 1;
            }
            None => {
                *slot = Some(AckSpan {
                    zone: owner.0.to_owned(),
                    server: owner.1.to_owned(),
                    timeline: owner.2,
                    first_tick: durable_tick,
                    last_tick: durable_tick,
                    first_at_us: now,
                    last_at_us: now,
                    acks: 1,
                })
            }
        }
    }
}

impl Resume {
    /// Ticks of the bot's world that the restart lost.
    pub fn lost_ticks(&self) -> u64 {
        self.last_seen_tick.saturating_sub(self.resumed_tick)
    }
}

impl BotStats {
    fn record_rtt(&self, micros: u64) {
        if let Ok(mut v) = self.rtt_micros.lock() {
            v.push(micros.min(u64::from(u32::MAX)) as u32);
        }
    }

    pub fn resumes(&self) -> Vec<Resume> {
        self.resumes.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// What every ended session had acknowledged.
    pub fn ack_spans(&self) -> Vec<AckSpan> {
        self.ack_spans.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn travel_pauses(&self) -> Vec<Duration> {
        self.travel_pauses.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every RTT sample so far, in microseconds.
    pub fn rtt_samples(&self) -> Vec<u32> {
        self.rtt_micros.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// What one bot saw over its life.
#[derive(Debug, Clone, Copy, Default)]
pub struct BotReport {
    pub joined: bool,
    pub updates: u64,
    pub connected: Duration,
}

/// Microseconds on this process's clock (the one [`AckSpan`]s are timed by).
pub fn micros_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A session hears from its server many times a second (updates, pongs):
/// this long without a word, the server or the way to it is gone (a host
/// that died sends nothing, not even a close), and the bot goes back to the
/// platform to ask where its zone runs now.
pub const SILENCE: Duration = Duration::from_millis(1_000);

/// How long the address of a server that fell silent or did not answer is
/// not connected to again: the platform may list it until its registry
/// entry runs out, and a spare needs a few seconds to take its zones over.
/// Meanwhile the bot asks the platform again every [`MOVING_RETRY`].
const SHUN_FOR: Duration = Duration::from_secs(5);
const MOVING_RETRY: Duration = Duration::from_millis(200);

/// The platform sent the bot back to a server it just lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillListed(String);

impl std::fmt::Display for StillListed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the platform still sends players to {}, which was just lost", self.0)
    }
}

impl std::error::Error for StillListed {}

/// Longest wait for a connection to open: on a host that is gone it never does.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// A connection that did not open within [`CONNECT_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer from {} within {CONNECT_LIMIT:?}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Decides what a bot does next from what it sees.
#[derive(Debug)]
struct Brain {
    rng: Rng,
    seq: u32,
    velocity: Point,
    next_decision_tick: u64,
    next_attack_tick: u64,
    /// How often it travels, and when it next heads for an exit.
    travel: Option<(Duration, Instant)>,
    /// Heading for an exit: where it stood at the last look, and how many
    /// looks in a row it sidesteps an obstacle.
    last_pos: Option<Point>,
    sidestep: u32,
}

impl Brain {
    fn new(seed: u64, travel_every: Option<Duration>) -> Self {
        let mut brain = Self {
            rng: Rng::new(seed),
            seq: 0,
            velocity: Point::default(),
            next_decision_tick: 0,
            next_attack_tick: 0,
            travel: travel_every.map(|every| (every, Instant::now())),
            last_pos: None,
            sidestep: 0,
        };
        brain.arrived();
        brain
    }

    /// In a zone (again): the next travel is a random share of the period to
    /// a whole period away, so a fleet does not travel in step.
    fn arrived(&mut self) {
        if let Some((every, _)) = self.travel {
            let share = every.mul_f64(0.5 + f64::from(self.rng.below(1_000)) / 2_000.0);
            self.travel = Some((every, Instant::now() + share));
        }
        (self.last_pos, self.sidestep) = (None, 0);
    }

    fn travelling(&self) -> bool {
        self.travel.is_some_and(|(_, at)| Instant::now() >= at)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn decide(&mut self, world: &World, out: &mut Vec<C>) {
        let (Some(w), Some(me)) = (world.welcome.as_ref(), world.me()) else { return };
        if world.is_dead() {
            self.velocity = Point::default();
            return;
        }
        let tick = world.tick;
        let pos = Point::new(me.x, me.y);
        let reach = |range: u32| (i64::from(range) - 20).max(0).pow(2);
        if let Some((item, d2)) = world.nearest(pos, EntityKind::Item, |_| true) {
            if d2 <= reach(w.pickup_range) {
                let seq = self.next_seq();
                out.push(C::Pickup(respawn_proto::Pickup { seq, item: item.id }));
            }
        }
        if tick >= self.next_attack_tick {
            if let Some((npc, d2)) = world.nearest(pos, EntityKind::Npc, |e| e.hp > 0) {
                if d2 <= reach(w.attack_range) {
                    let seq = self.next_seq();
                    out.push(C::Attack(respawn_proto::Attack { seq, target: npc.id }));
                    self.next_attack_tick = tick + 10;
                }
            }
        }
        let speed = (w.max_speed * 3 / 4).max(1) as i32;
        if self.travelling() {
            if tick >= self.next_decision_tick {
                self.next_decision_tick = tick + 10;
                self.head_for_exit(w, pos, speed, out);
            }
            return;
        }
        if let Some(away) = away_from_exits(w, pos) {
            // Bots stay in their zone: near a way out, they turn from it.
            self.steer(step_towards(pos, away, speed), out);
            self.next_decision_tick = tick + 10;
            return;
        }
        if tick >= self.next_decision_tick {
            self.next_decision_tick = tick + 10 + u64::from(self.rng.below(30));
            let seek = self.rng.below(10) < 6;
            let target = world
                .nearest(pos, EntityKind::Item, |_| true)
                .or_else(|| world.nearest(pos, EntityKind::Npc, |e| e.hp > 0))
                .map(|(e, _)| Point::new(e.x, e.y));
            let goal = match target {
                Some(t) if seek => t,
                _ => Point::new(self.rng.range_i32(0, w.width), self.rng.range_i32(0, w.height)),
            };
            self.steer(step_towards(pos, goal, speed), out);
        }
    }

    /// Walks to the nearest point of the nearest exit; when an obstacle holds
    /// it back, it steps aside for a few looks first.
    fn head_for_exit(&mut self, w: &respawn_proto::Welcome, pos: Point, speed: i32, out: &mut Vec<C>) {
        let Some(goal) = nearest_exit_point(w, pos) else { return };
        let stuck = self.last_pos.is_some_and(|p| p.dist2(pos) < i64::from(speed).pow(2));
        self.last_pos = Some(pos);
        if stuck && self.sidestep == 0 {
            self.sidestep = 3;
        }
        let v = if self.sidestep > 0 {
            self.sidestep -= 1;
            let towards = step_towards(pos, goal, speed);
            // Across the way to the exit, to one side or the other.
            let side = if self.rng.below(2) == 0 { 1 } else { -1 };
            Point::new(-towards.y * side, towards.x * side)
        } else {
            step_towards(pos, goal, speed)
        };
        self.steer(v, out);
    }

    fn steer(&mut self, v: Point, out: &mut Vec<C>) {
        if v != self.velocity {
            self.velocity = v;
            let seq = self.next_seq();
            out.push(C::Move(respawn_proto::MoveInput { seq, vx: v.x, vy: v.y }));
        }
    }
}

/// How close to an exit a bot turns away from it: farther than it walks
/// between two looks at the field.
const EXIT_MARGIN: i32 = 1_000;

/// A point straight away from the exit `pos` is near, if it is near one.
fn away_from_exits(w: &respawn_proto::Welcome, pos: Point) -> Option<Point> {
    w.exits.iter().filter_map(|e| e.area.as_ref()).find_map(|a| {
        let near = pos.x >= a.x - EXIT_MARGIN
            && pos.x <= a.x + a.w + EXIT_MARGIN
            && pos.y >= a.y - EXIT_MARGIN
            && pos.y <= a.y + a.h + EXIT_MARGIN;
        let centre = Point::new(a.x + a.w / 2, a.y + a.h / 2);
        near.then(|| Point::new(2 * pos.x - centre.x, 2 * pos.y - centre.y))
    })
}

/// The point of an exit nearest to `pos` (a little inside its area).
fn nearest_exit_point(w: &respawn_proto::Welcome, pos: Point) -> Option<Point> {
    w.exits
        .iter()
        .filter_map(|e| e.area.as_ref())
        .map(|a| {
            let inset = |lo: i32, len: i32, v: i32| v.clamp(lo + (len / 4).min(50), lo + len - (len / 4).min(50));
            Point::new(inset(a.x, a.w, pos.x), inset(a.y, a.h, pos.y))
        })
        .min_by_key(|p| p.dist2(pos))
}

/// What carries over from one session to the next: how to resume, and what
/// the last one saw (to measure what a restart lost).
#[derive(Debug, Default)]
struct Continuity {
    resume_token: Option<String>,
    /// The bot's account ([`Access::Login`]).
    account: Option<GuestSession>,
    /// The join in use ([`Access::Login`]) and how many sessions in a row failed with it.
    grant: Option<(PlayGrant, u32)>,
    /// When the platform gave it: its character ticket is good for a minute.
    granted_at: Option<Instant>,
    last_seen_tick: u64,
    /// The zone's timeline in the last session (it changes when the zone is restored).
    timeline: Option<u64>,
    durable_tick: u64,
    lost_at: Option<Instant>,
    last_update_at: Option<Instant>,
    /// The character's stats as last seen: a resume must give them back.
    last_stats: Option<respawn_proto::PlayerStats>,
    /// Stats seen in ticks not yet confirmed stored, oldest first.
    pending_stats: VecDeque<(u64, respawn_proto::PlayerStats)>,
    /// The newest stats seen in a tick the zone confirmed stored: no later
    /// join may give back less.
    durable_stats: Option<respawn_proto::PlayerStats>,
    /// Where the zone moved (a migrate notice): the next session goes there.
    redirect: Option<String>,
    /// The zone the character travelled to (a travel notice): it plays there from now on.
    zone: Option<String>,
    /// When the last travel notice came: the pause lasts until the first update in the next zone.
    travelled_at: Option<Instant>,
    /// With [`Access::Direct`], the address the zone moved to last.
    direct_url: Option<String>,
    /// A server address that fell silent or did not answer, and when ([`SHUN_FOR`]).
    shunned: Option<(String, Instant)>,
    /// Recent acknowledgements: (durable through tick, highest seq), oldest first.
    acks: VecDeque<(u64, u32)>,
}

/// Sessions in a row that may fail on one join before the bot asks the platform again
/// (the server may be restarting at the same address).
const FAILURES_BEFORE_RELOGIN: u32 = 3;

impl Continuity {
    /// Drops the join of a server that is gone, and keeps away from its address a while.
    fn shun_grant(&mut self) {
        if let Some((grant, _)) = self.grant.take() {
            self.shunned = Some((grant.address, Instant::now()));
        }
    }

    fn count_login_failure(&mut self) {
        if let Some((_, failures)) = &mut self.grant {
            *failures += 1;
            if *failures >= FAILURES_BEFORE_RELOGIN {
                self.grant = None;
            }
        }
    }

    /// Closes that say another server (or a fresh token) is needed drop the join.
    fn forget_login_after_close(&mut self, code: u16) {
        use respawn_proto::CloseCode;
        if code == CloseCode::InvalidToken.code() {
            if let Some(account) = &mut self.account {
                account.stale();
            }
        }
        let relogin = [
            CloseCode::Draining,
            CloseCode::UnknownZone,
            CloseCode::InvalidToken,
            CloseCode::GoingAway,
            CloseCode::CharacterUnavailable,
        ];
        if relogin.iter().any(|c| c.code() == code) {
            self.grant = None;
        } else if let Some((_, failures)) = &mut self.grant {
            *failures = 0;
        }
    }

    /// Stats seen at `tick`; those of ticks through `durable_tick` are stored.
    fn saw_stats(&mut self, tick: u64, stats: &respawn_proto::PlayerStats, durable_tick: u64) {
        self.pending_stats.push_back((tick, stats.clone()));
        while self.pending_stats.front().is_some_and(|(t, _)| *t <= durable_tick) {
            self.durable_stats = self.pending_stats.pop_front().map(|(_, s)| s);
        }
        if self.pending_stats.len() > 200 {
            self.pending_stats.pop_front();
        }
    }

    fn ack(&mut self, durable_tick: u64, seq: u32) {
        self.durable_tick = durable_tick;
        self.acks.push_back((durable_tick, seq));
        if self.acks.len() > 200 {
            self.acks.pop_front();
        }
    }

    /// Acknowledged commands that a zone resumed at `tick` does not contain.
    fn lost_since(&self, tick: u64) -> u32 {
        let newest = self.acks.back().map_or(0, |a| a.1);
        let kept = self.acks.iter().filter(|(durable, _)| *durable <= tick).map(|a| a.1).max().unwrap_or(0);
        if self.acks.iter().any(|(durable, _)| *durable > tick) {
            newest.saturating_sub(kept)
        } else {
            0
        }
    }
}

/// Whether `after` has at least the gold, XP, level and items of `before`
/// (the simulation only ever adds to them).
fn kept(before: &respawn_proto::PlayerStats, after: &respawn_proto::PlayerStats) -> bool {
    let count = |s: &respawn_proto::PlayerStats, item: i32| {
        s.inventory.iter().filter(|slot| slot.item == item).map(|slot| u64::from(slot.count)).sum::<u64>()
    };
    after.gold >= before.gold
        && after.xp >= before.xp
        && after.level >= before.level
        && before.inventory.iter().all(|slot| count(after, slot.item) >= count(before, slot.item))
}

enum SessionEnd {
    Cancelled,
    Closed {
        code: u16,
        reason: String,
    },
    /// Nothing heard for [`SILENCE`].
    Silent,
}

/// Plays until cancelled (or, without `reconnect`, until the first session ends).
pub async fn run_bot(config: BotConfig, stats: Arc<BotStats>, cancel: CancellationToken) -> BotReport {
    let mut report = BotReport::default();
    let mut brain = Brain::new(config.player_id, config.travel_every);
    let mut link = Continuity::default();
    let mut backoff = Duration::from_millis(100);
    let mut character_waits = 0;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        match session(&config, &stats, &cancel, &mut brain, &mut link, &mut report).await {
            Ok(SessionEnd::Cancelled) => break,
            Ok(SessionEnd::Closed { code, reason }) => {
                link.forget_login_after_close(code);
                // It played: the next attempt starts from the shortest wait.
                backoff = Duration::from_millis(100);
                character_waits = 0;
                tracing::debug!(bot = %config.name, code, reason = %reason, "bot disconnected");
            }
            Ok(SessionEnd::Silent) => {
                // Its server is gone: ask where the zone runs now.
                link.shun_grant();
                stats.silences.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                character_waits = 0;
                tracing::debug!(bot = %config.name, "the server fell silent");
            }
            Err(e) => {
                // The character's last stay is still being stored: joining again
                // shortly is part of joining, even for a bot that does not reconnect.
                let unavailable = e
                    .downcast_ref::<crate::conn::JoinRefused>()
                    .is_some_and(|r| r.code == respawn_proto::CloseCode::CharacterUnavailable.code());
                if unavailable && character_waits < CHARACTER_WAITS {
                    character_waits += 1;
                    link.forget_login_after_close(respawn_proto::CloseCode::CharacterUnavailable.code());
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        _ = cancel.cancelled() => break,
                    }
                }
                if e.downcast_ref::<StillListed>().is_some() {
                    // Its zone is moving: ask again shortly, without counting a failure.
                    tokio::select! {
                        _ = tokio::time::sleep(MOVING_RETRY) => continue,
                        _ = cancel.cancelled() => break,
                    }
                }
                if e.downcast_ref::<Unreachable>().is_some() {
                    // A host that does not answer will not soon: ask the platform again.
                    link.shun_grant();
                } else {
                    link.count_login_failure();
                }
                stats.connects_failed.fetch_add(1, Ordering::Relaxed);
                if e.downcast_ref::<crate::conn::UpgradeRefused>().is_some_and(|r| r.status == 429) {
                    stats.connects_capped.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(bot = %config.name, error = %e, "bot could not play");
            }
        }
        if !config.reconnect {
            break;
        }
        if link.redirect.is_some() {
            // The zone is already running at its new address: no reason to wait.
            continue;
        }
        let jitter = Duration::from_millis(u64::from(brain.rng.below(100)));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    report
}

/// Joins in a row refused because the character was not to be had yet
/// (its last stay still on its way to the platform) before that counts as
/// a failure: 10 s of waiting, 200 ms apart.
const CHARACTER_WAITS: u32 = 50;

/// How long a play grant is used for new joins: its character ticket lives a minute.
const GRANT_REUSE: Duration = Duration::from_secs(45);

/// Where to connect, and the session token and character ticket to present.
async fn credentials(config: &BotConfig, link: &mut Continuity) -> Result<(String, String, String)> {
    if let Some(address) = link.redirect.take() {
        match &config.access {
            Access::Direct { .. } => link.direct_url = Some(address),
            Access::Login { .. } | Access::Guests { .. } => {
                if let Some((grant, _)) = link.grant.as_mut() {
                    grant.address = address;
                }
            }
        }
    }
    match &config.access {
        Access::Direct { url, tokens } => {
            let url = link.direct_url.clone().unwrap_or_else(|| url.clone());
            Ok((url, tokens(config.player_id, &config.name), String::new()))
        }
        Access::Login { platform } | Access::Guests { platform, .. } => {
            let fresh =
                link.grant.as_ref().is_some_and(|(grant, _)| grant.expires_at > respawn_api::clock::unix_secs() + 60)
                    && link.granted_at.is_some_and(|at| at.elapsed() < GRANT_REUSE);
            if !fresh {
                let account = match &mut link.account {
                    Some(account) => account,
                    None => {
                        let session = match &config.access {
                            Access::Guests { device_secrets, .. } if !device_secrets.is_empty() => {
                                let secret = &device_secrets
                                    [(config.player_id as usize).saturating_sub(1) % device_secrets.len()];
                                GuestSession::sign_in(platform, secret).await?
                            }
                            _ => GuestSession::sign_up(platform).await?,
                        };
                        link.account.insert(session)
                    }
                };
                let zone = link.zone.as_deref().unwrap_or(&config.zone);
                let grant = account.play(zone).await?;
                link.shunned = link.shunned.take().filter(|(_, at)| at.elapsed() < SHUN_FOR);
                if link.shunned.as_ref().is_some_and(|(address, _)| *address == grant.address) {
                    return Err(StillListed(grant.address).into());
                }
                link.grant = Some((grant, 0));
                link.granted_at = Some(Instant::now());
            }
            let (grant, _) = link.grant.as_ref().ok_or_else(|| anyhow::anyhow!("no join"))?;
            Ok((grant.address.clone(), grant.token.clone(), grant.character_ticket.clone()))
        }
    }
}

async fn session(
    config: &BotConfig,
    stats: &BotStats,
    cancel: &CancellationToken,
    brain: &mut Brain,
    link: &mut Continuity,
    report: &mut BotReport,
) -> Result<SessionEnd> {
    let limit = Duration::from_secs(10);
    let (url, token, ticket) = tokio::select! {
        c = credentials(config, link) => c?,
        _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
    };
    let mut conn = tokio::select! {
        c = tokio::time::timeout(CONNECT_LIMIT, Connection::connect_from(&url, config.source)) => {
            c.map_err(|_| Unreachable(url.clone()))??
        }
        _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
    };
    let welcome = tokio::select! {
        w = conn.join(token, link.resume_token.clone(), &ticket, link.zone.as_deref().unwrap_or(&config.zone), limit) => w?,
        _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
    };
    if welcome.resumed {
        // A zone restored since the last session went back to where its new
        // timeline starts; what the bot saw after that was lost.
        let resumed_tick = match link.timeline {
            Some(seen) if seen != welcome.timeline => welcome.timeline_start_tick.min(welcome.tick),
            _ => welcome.tick,
        };
        if let (Some(lost_at), Ok(mut resumes)) = (link.lost_at, stats.resumes.lock()) {
            resumes.push(Resume {
                player_id: config.player_id,
                last_seen_tick: link.last_seen_tick,
                durable_tick: link.durable_tick,
                resumed_tick,
                gap: lost_at.elapsed(),
                frozen: link.last_update_at.unwrap_or(lost_at).elapsed(),
                lost_acknowledged: link.lost_since(resumed_tick),
            });
        }
    }
    link.timeline = Some(welcome.timeline);
    let welcome_timeline = welcome.timeline;
    let had_character = link.resume_token.is_some();
    // Through the platform a character that left the zone comes back from
    // where the platform kept it: not a new one.
    let kept_by_platform = matches!(config.access, Access::Login { .. } | Access::Guests { .. });
    if had_character && !welcome.resumed && !kept_by_platform {
        stats.characters_lost.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bot = %config.name, "reconnected to a new character: the old one was lost");
    }
    // The stats the character taken back must at least have (gold, XP and items only grow).
    let mut must_match = if welcome.resumed || kept_by_platform { link.last_stats.take() } else { None };
    // What a server confirmed stored is owed whatever happened since; stats
    // of ticks not confirmed belonged to another zone's clock.
    let mut must_keep = if welcome.resumed || kept_by_platform { link.durable_stats.take() } else { None };
    link.pending_stats.clear();
    brain.arrived();
    link.resume_token = Some(welcome.resume_token.clone()).filter(|t| !t.is_empty());
    link.lost_at = None;
    stats.connects_ok.fetch_add(1, Ordering::Relaxed);
    stats.connected.fetch_add(1, Ordering::Relaxed);
    report.joined = true;
    let joined_at = Instant::now();
    let mut world = World::default();
    world.reset(welcome);
    let mut think = tokio::time::interval(Duration::from_millis(100));
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    let mut outbox = Vec::new();
    let zone = link.zone.clone().unwrap_or_else(|| config.zone.clone());
    let mut acked: Option<AckSpan> = None;
    let mut heard = Instant::now();
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break SessionEnd::Cancelled,
            event = conn.next() => { heard = Instant::now(); match event? {
                Event::Message(S::Update(u)) => {
                    link.last_seen_tick = u.tick;
                    link.last_update_at = Some(Instant::now());
                    if let (Some(at), Ok(mut pauses)) = (link.travelled_at.take(), stats.travel_pauses.lock()) {
                        pauses.push(at.elapsed());
                    }
                    if u.acked_seq != 0 {
                        link.ack(u.durable_tick, u.acked_seq);
                        AckSpan::ack(&mut acked, (&zone, &url, welcome_timeline), u.durable_tick);
                    }
                    if let Some(you) = &u.you {
                        if let Some(before) = must_match.take() {
                            if !kept(&before, you) {
                                stats.inventories_lost.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(bot = %config.name, ?before, after = ?you, "resumed with less than before");
                            }
                        }
                        if let Some(stored) = must_keep.take() {
                            if !kept(&stored, you) {
                                stats.progress_lost.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(bot = %config.name, ?stored, after = ?you, "joined with less than was stored");
                            }
                        }
                        link.saw_stats(u.tick, you, u.durable_tick);
                        link.last_stats = Some(you.clone());
                    }
                    world.apply(u)?;
                    report.updates += 1;
                    stats.updates.fetch_add(1, Ordering::Relaxed);
                }
                Event::Message(S::Pong(p)) => stats.record_rtt(micros_now().saturating_sub(p.client_time)),
                Event::Message(S::Rejected(r)) => {
                    stats.rejections.fetch_add(1, Ordering::Relaxed);
                    if r.reason == "zone_moving" {
                        stats.refused_moving.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Message(S::Notice(n)) if n.kind == NoticeKind::Shutdown as i32 => {
                    // The server is being replaced: reconnect now rather than at the
                    // deadline, through a new join; the character waits for the resume.
                    link.grant = None;
                    break SessionEnd::Closed { code: 1001, reason: n.text };
                }
                Event::Message(S::Notice(n)) if n.kind == NoticeKind::Travel as i32 && !n.travel_to.is_empty() => {
                    // The character walked on to another zone: play there, through a new join.
                    stats.travels.fetch_add(1, Ordering::Relaxed);
                    link.travelled_at = Some(Instant::now());
                    link.zone = Some(n.travel_to);
                    link.grant = None;
                    link.resume_token = None;
                    break SessionEnd::Closed { code: respawn_proto::CloseCode::Travelled.code(), reason: n.text };
                }
                Event::Message(S::Notice(n)) if n.kind == NoticeKind::Migrate as i32 && !n.migrate_to.is_empty() => {
                    // The zone runs at its new address already; the old server closes next.
                    stats.migrations.fetch_add(1, Ordering::Relaxed);
                    link.redirect = Some(n.migrate_to);
                    break SessionEnd::Closed { code: respawn_proto::CloseCode::Migrated.code(), reason: n.text };
                }
                Event::Message(_) => {}
                Event::Closed { code, reason } => break SessionEnd::Closed { code, reason },
            }},
            _ = think.tick() => {
                // Looked at with each thought (every 100 ms), not with a timer per message.
                if heard.elapsed() >= SILENCE {
                    break SessionEnd::Silent;
                }
                brain.decide(&world, &mut outbox);
                for body in outbox.drain(..) {
                    conn.send(body).await?;
                    stats.commands_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = ping.tick() => conn.send(C::Ping(respawn_proto::Ping { client_time: micros_now() })).await?,
        }
    };
    stats.connected.fetch_sub(1, Ordering::Relaxed);
    stats.bytes_in.fetch_add(conn.bytes_in, Ordering::Relaxed);
    if let (Some(span), Ok(mut spans)) = (acked, stats.ack_spans.lock()) {
        spans.push(span);
    }
    link.lost_at = Some(Instant::now());
    report.connected += joined_at.elapsed();
    match end {
        // Stopped: leave politely (the character goes).
        SessionEnd::Cancelled => {
            let _ = conn.send(C::Leave(respawn_proto::Leave {})).await;
            conn.close().await;
        }
        // Told to go elsewhere: close without leaving, so the character waits for the resume.
        SessionEnd::Closed { code, .. } if code == 1001 || code == respawn_proto::CloseCode::Migrated.code() => {
            conn.close().await;
        }
        SessionEnd::Closed { .. } | SessionEnd::Silent => {}
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use respawn_proto::{EntityState, StateUpdate, Welcome};

    fn world_with(npc_at: i32, item_at: i32) -> World {
        let mut w = World::default();
        w.reset(Welcome {
            entity_id: 1,
            width: 3_000,
            height: 3_000,
            max_speed: 30,
            attack_range: 250,
            pickup_range: 150,
            ..Default::default()
        });
        let e =
            |id, kind: EntityKind, x| EntityState { id, kind: kind as i32, x, y: 1_000, hp: 50, ..Default::default() };
        w.apply(StateUpdate {
            tick: 1,
            entered: vec![
                e(1, EntityKind::Player, 1_000),
                e(2, EntityKind::Npc, npc_at),
                e(3, EntityKind::Item, item_at),
            ],
            ..Default::default()
        })
        .expect("applies");
        w
    }

    #[test]
    fn bot_fights_and_picks_up_what_is_in_reach() {
        let mut brain = Brain::new(1, None);
        let mut out = Vec::new();
        brain.decide(&world_with(1_100, 1_050), &mut out);
        assert!(out.iter().any(|b| matches!(b, C::Pickup(p) if p.item == 3)), "{out:?}");
        assert!(out.iter().any(|b| matches!(b, C::Attack(a) if a.target == 2)), "{out:?}");
        assert!(out.iter().any(|b| matches!(b, C::Move(m) if m.vx * m.vx + m.vy * m.vy <= 30 * 30)), "{out:?}");
    }

    #[test]
    fn lost_acknowledged_commands_are_counted_from_acks() {
        let mut c = Continuity::default();
        c.ack(10, 3);
        c.ack(12, 5);
        c.ack(14, 9);
        assert_eq!(c.lost_since(14), 0);
        assert_eq!(c.lost_since(12), 4, "seqs 6..=9 were durable only through tick 14");
        assert_eq!(c.lost_since(9), 9);
    }

    #[test]
    fn bot_ignores_what_is_out_of_reach() {
        let mut brain = Brain::new(1, None);
        let mut out = Vec::new();
        brain.decide(&world_with(2_500, 2_600), &mut out);
        assert!(out.iter().all(|b| matches!(b, C::Move(_))), "{out:?}");
    }
}
