//! The zone server: hosts several zones, each on its own fixed-rate tick
//! thread, behind one WebSocket endpoint with health, readiness, metrics and
//! a graceful drain.

pub mod bans;
pub mod bundle;
pub mod config;
mod conn;
pub mod events;
pub mod heartbeat;
pub mod history;
pub mod inspect;
pub mod lease;
pub mod link;
pub mod metrics;
pub mod persist;
pub mod process;
pub mod publish;
pub mod replay;
pub mod rollback;
pub mod server;
pub mod sockets;
pub mod wire;
pub mod zone_loop;

pub use config::{ConfigError, ServerConfig};
pub use server::{BanEnforcer, Characters, DrainReport, DrainTrigger, ServerError, ServerOptions, ZoneServer};
