//! Respawn's zone simulation: a pure, deterministic game of one zone.
//!
//! Nothing here does IO, reads a clock or draws unseeded randomness. The same
//! snapshot fed the same command batches produces the same state bytes and the
//! same events, which is what lets recovery replay a journal instead of losing
//! seconds of play.

pub mod character;
mod codec;
pub mod command;
pub mod config;
pub mod event;
pub mod geom;
pub mod grid;
pub mod ids;
pub mod rng;
pub mod snapshot;
pub mod view;
pub mod zone;

pub use character::Character;
pub use codec::DecodeError;
pub use command::{Command, CommandKind, RejectReason};
pub use config::{ConfigError, ZoneConfig};
pub use event::{DomainEvent, EventId, EventKind, Killer};
pub use geom::{Point, Rect};
pub use ids::{EntityId, ItemKind, PlayerId};
pub use zone::{Npc, Player, Rejection, TickOutput, Zone, ZoneItem};
