//! Typed contracts between Respawn's processes, and their clients: the zone
//! servers' admin API ([`admin`]), the platform's server registry
//! ([`registry`]), the players' accounts and sign-in ([`players`]), the
//! platform's status and trends ([`overview`]), reading a server's `/metrics` ([`prom`]),
//! two builds' replays of one zone history compared ([`replay`]), and the HTTP
//! client every caller shares ([`http`], over `reqwest`) with its TLS
//! ([`tls`]). Both sides of each
//! contract use these types, so a reply cannot drift from what its callers read.

pub mod admin;
pub mod clock;
pub mod http;
pub mod overview;
pub mod players;
pub mod prom;
pub mod registry;
pub mod replay;
pub mod tls;
