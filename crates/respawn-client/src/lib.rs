//! Clients of a zone server: a protocol connection, a world model built from
//! state updates, the bot that plays by itself (used by `respawn up --bots`
//! and `respawn loadgen`).

pub mod bot;
pub mod conn;
pub mod world;

pub use bot::{
    micros_now, run_bot, signed_tokens, Access, AckSpan, BotConfig, BotReport, BotStats, Fleet, GuestSession, Resume,
    TokenSource,
};
pub use conn::{Connection, Event, JoinRefused};
pub use world::World;
