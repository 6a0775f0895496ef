//! The wall clock as Unix time, in one place: the timestamps of contracts,
//! tokens, leases and records. A clock set before 1970 reads as 0.
//! (`respawn-sim` reads no clock; the zone's ticks have their own.)

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Also a seed: two calls a moment apart differ.
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}
