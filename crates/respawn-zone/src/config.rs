//! Zone server configuration: a TOML file says what runs; command-line flags
//! override the runtime knobs. Everything is validated into [`ServerConfig`]
//! before anything starts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use respawn_sim::config::Exit;
use respawn_sim::{Point, Rect, ZoneConfig};
use serde::Deserialize;

use crate::persist::PersistSettings;

/// The file format. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<SocketAddr>,
    pub tick_hz: Option<u32>,
    pub command_queue_capacity: Option<usize>,
    pub view_radius: Option<i32>,
    pub max_visible: Option<usize>,
    pub max_players_per_zone: Option<usize>,
    /// Threads one zone's replication may use (once one thread would take
    /// over `zone_loop::REPLICATE_ALONE_WITHIN`); default: the machine's cores.
    pub replication_threads: Option<usize>,
    pub drain_deadline_secs: Option<u64>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub persistence: PersistenceFile,
    #[serde(default)]
    pub outbox: OutboxFile,
    #[serde(default)]
    pub testing: TestingFile,
    #[serde(default)]
    pub zones: Vec<ZoneFile>,
}

/// Settings that exist for tests and drills only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingFile {
    /// Milliseconds added to every tick (busy time, counted in the tick duration): a slow zone on purpose.
    pub extra_tick_ms: Option<u64>,
    /// Act as a build whose clients speak this protocol version (rollout compatibility tests).
    pub protocol_version: Option<u32>,
    /// Act as a build that reads only snapshots of this format (rollout compatibility tests).
    pub snapshot_format: Option<u16>,
}

pub use respawn_api::admin::Compat;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxFile {
    pub quota_mb: Option<u64>,
    pub segment_mb: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceFile {
    pub hot_snapshot_secs: Option<u64>,
    pub cold_snapshot_secs: Option<u64>,
    pub keep_cold: Option<usize>,
    pub lease_ttl_ms: Option<u64>,
    pub history_secs: Option<u64>,
    pub history_segment_secs: Option<u64>,
    pub history_max_mb: Option<u64>,
    pub resume_grace_secs: Option<u64>,
    pub resume_token_ttl_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub client_send_buffer: Option<usize>,
    pub max_dropped_updates: Option<u32>,
    pub commands_per_second: Option<u32>,
    pub join_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
    pub ping_interval_ms: Option<u64>,
    pub connections_per_ip: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneFile {
    pub id: u32,
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub npc_count: Option<u32>,
    pub max_items: Option<u32>,
    /// Areas that lead to other zones of this configuration.
    #[serde(default)]
    pub exits: Vec<ExitFile>,
}

/// `[[zones.exits]]`: a rectangle of the field (centimetres) that leads to
/// zone `to`, where the player arrives at (`arrival_x`, `arrival_y`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitFile {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
    pub to: String,
    pub arrival_x: i32,
    pub arrival_y: i32,
}

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Outbound messages queued per client before updates are dropped.
    pub client_send_buffer: usize,
    /// Consecutive dropped updates after which a client is disconnected.
    pub max_dropped_updates: u32,
    /// Sustained commands per second per connection (also the burst size).
    pub commands_per_second: u32,
    pub join_timeout: Duration,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    /// Connections (WebSocket and HTTP) one IP address may hold open; 0: no cap
    /// (behind a proxy every player has the proxy's address: cap there).
    pub connections_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_send_buffer: 64,
            max_dropped_updates: 40,
            commands_per_second: 60,
            join_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            connections_per_ip: 128,
        }
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tick_hz: u32,
    pub command_queue_capacity: usize,
    pub view_radius: i32,
    pub max_visible: usize,
    pub max_players_per_zone: usize,
    pub replication_threads: usize,
    pub drain_deadline: Duration,
    pub limits: Limits,
    pub persist: PersistSettings,
    /// How long a character without a connection waits for its player.
    pub resume_grace: Duration,
    pub resume_token_ttl: Duration,
    /// Events kept on disk per zone while the broker is away; past it the oldest are dropped.
    pub outbox_quota_bytes: u64,
    pub outbox_segment_bytes: u64,
    /// Test-only: added to every tick ([`TestingFile::extra_tick_ms`]).
    pub extra_tick: Duration,
    /// This build's protocol and snapshot format (test settings may pretend otherwise).
    pub compat: Compat,
    /// The zones this server may host; it starts hosting all of them unless it stands by.
    pub zones: Vec<ZoneConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7350";

impl ServerConfig {
    /// Two standard zones on the default port: what runs with no config file.
    pub fn defaults() -> Self {
        Self::from_file(default_file()).expect("built-in defaults are valid")
    }

    /// The zones of the configuration `only` leaves out (none when `only`
    /// is empty: every zone); a name `only` lists that is not a zone is refused.
    pub fn left_out_by(&self, only: &[String]) -> Result<Vec<String>, String> {
        let configured: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
        if let Some(unknown) = only.iter().find(|z| !configured.contains(&z.as_str())) {
            return Err(format!("{unknown:?} is not a zone of the configuration (it has {})", configured.join(", ")));
        }
        let left_out = configured.into_iter().filter(|z| !only.is_empty() && !only.iter().any(|o| o == z));
        Ok(left_out.map(str::to_owned).collect())
    }

    /// The file at `path`, or the defaults without one.
    pub fn load_or_defaults(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::defaults()), Self::load)
    }

    /// The zone of this name, or of this numeric id.
    pub fn zone(&self, name_or_id: &str) -> Result<&ZoneConfig, String> {
        self.zones
            .iter()
            .find(|z| z.name == name_or_id || z.zone_id.to_string() == name_or_id)
            .ok_or_else(|| format!("no zone {name_or_id:?} in the configuration"))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let file: ConfigFile = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        Self::from_file(file)
    }

    pub fn from_file(file: ConfigFile) -> Result<Self, ConfigError> {
        let d = Limits::default();
        let l = file.limits;
        let p = file.persistence;
        let pd = PersistSettings::default();
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let config = ServerConfig {
            listen: file.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid literal")),
            tick_hz: file.tick_hz.unwrap_or(20),
            command_queue_capacity: file.command_queue_capacity.unwrap_or(8_192),
            view_radius: file.view_radius.unwrap_or(2_000),
            max_visible: file.max_visible.unwrap_or(128),
            max_players_per_zone: file.max_players_per_zone.unwrap_or(10_000),
            replication_threads: file
                .replication_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
            drain_deadline: Duration::from_secs(file.drain_deadline_secs.unwrap_or(30)),
            limits: Limits {
                client_send_buffer: l.client_send_buffer.unwrap_or(d.client_send_buffer),
                max_dropped_updates: l.max_dropped_updates.unwrap_or(d.max_dropped_updates),
                commands_per_second: l.commands_per_second.unwrap_or(d.commands_per_second),
                join_timeout: l.join_timeout_ms.map_or(d.join_timeout, ms),
                write_timeout: l.write_timeout_ms.map_or(d.write_timeout, ms),
                ping_interval: l.ping_interval_ms.map_or(d.ping_interval, ms),
                connections_per_ip: l.connections_per_ip.unwrap_or(d.connections_per_ip),
            },
            persist: PersistSettings {
                hot_every: p.hot_snapshot_secs.map_or(pd.hot_every, secs),
                cold_every: p.cold_snapshot_secs.map_or(pd.cold_every, secs),
                keep_cold: p.keep_cold.unwrap_or(pd.keep_cold),
                max_pending_ticks: pd.max_pending_ticks,
                unattended_journal_every: pd.unattended_journal_every,
                lease_ttl: p.lease_ttl_ms.map_or(pd.lease_ttl, ms),
                history: {
                    // By default as far back as a replay can start: the oldest cold snapshot kept.
                    let cold_reach = p
                        .cold_snapshot_secs
                        .map_or(pd.cold_every, secs)
                        .saturating_mul(u32::try_from(p.keep_cold.unwrap_or(pd.keep_cold)).unwrap_or(u32::MAX));
                    let window = p.history_secs.map_or(cold_reach, secs);
                    crate::history::HistorySettings {
                        window,
                        segment: p.history_segment_secs.map_or(pd.history.segment.min(window), secs),
                        max_bytes: p.history_max_mb.map_or(pd.history.max_bytes, |mb| mb.saturating_mul(1 << 20)),
                    }
                },
            },
            resume_grace: secs(p.resume_grace_secs.unwrap_or(30)),
            resume_token_ttl: secs(p.resume_token_ttl_secs.unwrap_or(3_600)),
            outbox_quota_bytes: file.outbox.quota_mb.unwrap_or(1_024).saturating_mul(1 << 20),
            outbox_segment_bytes: file.outbox.segment_mb.unwrap_or(8).saturating_mul(1 << 20),
            extra_tick: ms(file.testing.extra_tick_ms.unwrap_or(0)),
            compat: Compat {
                protocol_version: file.testing.protocol_version.unwrap_or(respawn_proto::PROTOCOL_VERSION),
                oldest_protocol_version: Some(
                    file.testing.protocol_version.unwrap_or(respawn_proto::OLDEST_PROTOCOL_VERSION),
                ),
                snapshot_format: file.testing.snapshot_format.unwrap_or(respawn_sim::snapshot::FORMAT_VERSION),
            },
            zones: if file.zones.is_empty() { default_file().zones } else { file.zones }
                .into_iter()
                .map(ZoneFile::into_zone_config)
                .collect(),
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.extra_tick > Duration::from_secs(10) {
            return bad(format!("testing.extra_tick_ms must be at most 10000, got {}", self.extra_tick.as_millis()));
        }
        if !(1..=1_000).contains(&self.tick_hz) {
            return bad(format!("tick_hz must be 1..=1000, got {}", self.tick_hz));
        }
        if !(1..=1_000_000).contains(&self.command_queue_capacity) {
            return bad(format!("command_queue_capacity must be 1..=1000000, got {}", self.command_queue_capacity));
        }
        if !(100..=100_000).contains(&self.view_radius) {
            return bad(format!("view_radius must be 100..=100000 cm, got {}", self.view_radius));
        }
        if !(1..=256).contains(&self.replication_threads) {
            return bad(format!("replication_threads must be 1..=256, got {}", self.replication_threads));
        }
        if !(1..=10_000).contains(&self.max_visible) || !(1..=1_000_000).contains(&self.max_players_per_zone) {
            return bad("max_visible must be 1..=10000 and max_players_per_zone 1..=1000000".into());
        }
        let l = &self.limits;
        if l.client_send_buffer == 0 || l.max_dropped_updates == 0 || l.commands_per_second == 0 {
            return bad("limits.client_send_buffer, max_dropped_updates and commands_per_second must be > 0".into());
        }
        if l.ping_interval.is_zero() || l.join_timeout.is_zero() || l.write_timeout.is_zero() {
            return bad("limits durations must be > 0".into());
        }
        let p = &self.persist;
        if p.hot_every.is_zero() || p.cold_every.is_zero() || p.keep_cold == 0 {
            return bad("persistence.hot_snapshot_secs, cold_snapshot_secs and keep_cold must be > 0".into());
        }
        if !(respawn_store::lease::MIN_TTL..=respawn_store::lease::MAX_TTL).contains(&p.lease_ttl) {
            return bad("persistence.lease_ttl_ms must be 50 to 3,600,000".into());
        }
        let h = &p.history;
        if h.enabled() && (h.segment.is_zero() || h.segment > h.window || h.max_bytes == 0) {
            return bad(
                "persistence.history_segment_secs must be > 0 and at most history_secs, history_max_mb > 0".into()
            );
        }
        // A replay starts from a cold snapshot: history older than the oldest kept is of no use.
        let cold_reach = p.cold_every.saturating_mul(u32::try_from(p.keep_cold).unwrap_or(u32::MAX));
        if h.window > cold_reach {
            return bad(format!(
                "persistence.history_secs ({} s) reaches past the oldest cold snapshot kept \
                 (keep_cold x cold_snapshot_secs = {} s), where no replay can start: raise keep_cold or lower history_secs",
                h.window.as_secs(),
                cold_reach.as_secs()
            ));
        }
        if self.outbox_segment_bytes == 0 || self.outbox_quota_bytes < self.outbox_segment_bytes {
            return bad("outbox.segment_mb must be > 0 and outbox.quota_mb at least as large".into());
        }
        if self.resume_token_ttl.is_zero() {
            return bad("persistence.resume_token_ttl_secs must be > 0".into());
        }
        if self.zones.is_empty() {
            return bad("at least one zone is required".into());
        }
        for (i, z) in self.zones.iter().enumerate() {
            z.validate().map_err(|e| ConfigError::Invalid(format!("zone {:?}: {e}", z.name)))?;
            if self.zones[..i].iter().any(|o| o.zone_id == z.zone_id || o.name == z.name) {
                return bad(format!("zone id {} / name {:?} is used twice", z.zone_id, z.name));
            }
        }
        for z in &self.zones {
            for e in &z.exits {
                let Some(target) = self.zones.iter().find(|t| t.name == e.to) else {
                    return bad(format!(
                        "zone {:?}: an exit leads to {:?}, which is not in this configuration",
                        z.name, e.to
                    ));
                };
                if !target.is_free(e.arrival) || target.exit_at(e.arrival).is_some() {
                    return bad(format!(
                        "zone {:?}: the exit to {:?} arrives at {:?}, which is blocked there (outside, an obstacle or an exit)",
                        z.name, e.to, e.arrival
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tick period.
    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_hz))
    }
}

impl ZoneFile {
    fn into_zone_config(self) -> ZoneConfig {
        let c = ZoneConfig::standard(self.id, &self.name, self.seed);
        let (width, height) = (self.width.unwrap_or(c.width), self.height.unwrap_or(c.height));
        let mut c = c.resized(width, height);
        c.npc_count = self.npc_count.unwrap_or(c.npc_count);
        c.max_items = self.max_items.unwrap_or(c.max_items);
        c.exits = self
            .exits
            .into_iter()
            .map(|e| Exit {
                area: Rect::new(e.x, e.y, e.w, e.h),
                to: e.to,
                arrival: Point::new(e.arrival_x, e.arrival_y),
            })
            .collect();
        c
    }
}

fn default_file() -> ConfigFile {
    // A portal at each zone's edge, halfway down, leads to the other zone's.
    let portal = |x, to: &str, arrival_x| ExitFile {
        x,
        y: 9_500,
        w: 600,
        h: 1_000,
        to: to.into(),
        arrival_x,
        arrival_y: 10_000,
    };
    let zone = |id, name: &str, seed, exit| ZoneFile {
        id,
        name: name.into(),
        seed,
        width: None,
        height: None,
        npc_count: None,
        max_items: None,
        exits: vec![exit],
    };
    ConfigFile {
        listen: None,
        tick_hz: None,
        command_queue_capacity: None,
        view_radius: None,
        max_visible: None,
        max_players_per_zone: None,
        replication_threads: None,
        drain_deadline_secs: None,
        limits: LimitsFile::default(),
        persistence: PersistenceFile::default(),
        outbox: OutboxFile::default(),
        testing: TestingFile::default(),
        zones: vec![
            zone(1, "meadow", 1, portal(19_000, "caverns", 1_500)),
            zone(2, "caverns", 2, portal(400, "meadow", 18_500)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_left_out_are_the_configured_ones_not_listed_and_unknown_names_are_refused() {
        let config = ServerConfig::defaults();
        let names: Vec<String> = config.zones.iter().map(|z| z.name.clone()).collect();
        assert_eq!(config.left_out_by(&[]), Ok(Vec::new()), "no list: every zone is hosted");
        assert_eq!(config.left_out_by(&names[..1]), Ok(names[1..].to_vec()));
        let refused = config.left_out_by(&["nowhere".to_owned()]).expect_err("not a zone");
        assert!(refused.starts_with("\"nowhere\" is not a zone of the configuration"), "{refused}");
    }

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: "test".into(), message: e.to_string() })?;
        ServerConfig::from_file(file)
    }

    #[test]
    fn history_reaches_as_far_back_as_the_cold_snapshots_and_no_further() {
        let c = parse("[persistence]\ncold_snapshot_secs = 2\nkeep_cold = 3\n").expect("valid");
        let h = &c.persist.history;
        assert_eq!((h.window, h.segment), (Duration::from_secs(6), Duration::from_secs(6)), "by default");
        assert_eq!(ServerConfig::defaults().persist.history.window, Duration::from_secs(900));
        let off = parse("[persistence]\nhistory_secs = 0\n").expect("valid");
        assert!(!off.persist.history.enabled());
        let too_far = parse("[persistence]\nhistory_secs = 3600\n").expect_err("past the cold snapshots");
        assert!(too_far.to_string().contains("raise keep_cold or lower history_secs"), "{too_far}");
        let long_segment = parse("[persistence]\nhistory_secs = 60\nhistory_segment_secs = 120\n").expect_err("bad");
        assert!(long_segment.to_string().contains("history_segment_secs must be > 0 and at most history_secs"));
    }

    #[test]
    fn defaults_have_two_zones() {
        let c = ServerConfig::defaults();
        assert_eq!(c.zones.len(), 2);
        assert_eq!(c.tick_hz, 20);
    }

    #[test]
    fn file_sets_zones_and_knobs() {
        let c = parse(
            "tick_hz = 30\n[limits]\ncommands_per_second = 10\n[[zones]]\nid = 9\nname = \"arena\"\nseed = 4\nnpc_count = 0\n",
        )
        .expect("valid");
        assert_eq!(c.tick_hz, 30);
        assert_eq!(c.limits.commands_per_second, 10);
        assert_eq!(c.zones[0].name, "arena");
        assert_eq!(c.zones[0].npc_count, 0);
    }

    #[test]
    fn example_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/zone.example.toml");
        let example = ServerConfig::load(&path).expect("example config loads");
        let defaults = ServerConfig::defaults();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn typos_and_bad_values_are_clear_errors() {
        let e = parse("tick_hzz = 30\n").unwrap_err().to_string();
        assert!(e.contains("tick_hzz"), "{e}");
        let e = parse("tick_hz = 0\n").unwrap_err().to_string();
        assert!(e.contains("tick_hz must be"), "{e}");
        let e = parse("[[zones]]\nid = 1\nname = \"a\"\n[[zones]]\nid = 1\nname = \"b\"\n").unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = parse("[[zones]]\nid = 1\nname = \"a\"\nwidth = 5\n").unwrap_err().to_string();
        assert!(e.contains("zone size"), "{e}");
    }
}
