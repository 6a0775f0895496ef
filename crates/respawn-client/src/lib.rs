//! Clients of a zone server: a protocol connection, a world model built from
//! state updates, the bot that plays by itself (used by `respawn up --bots`
//! and `respawn loadgen`), and the small HTTP and Prometheus helpers those
//! tools use to read a server's `/metrics`.

pub mod bot;
pub mod conn;
pub mod http;
pub mod prom;
pub mod world;

pub use bot::{run_bot, signed_tokens, BotConfig, BotReport, BotStats, Fleet, Resume, TokenSource};
pub use conn::{Connection, Event};
pub use world::World;
