//! Zone ownership: a lease per zone in the store that holds the zone's
//! durable state, with a fencing token that only grows. Every durable write
//! for the zone carries its writer's token ([`Fence`]); the store refuses
//! it, in the same atomic step as the write, once a newer lease was granted
//! ([`StoreError::Fenced`]). A superseded owner therefore makes nothing
//! durable, and acknowledges nothing (commands are acknowledged only once
//! durable).
//!
//! Clocks. No clock decides who may write: the stores check the token in
//! the same atomic step as the write. A lease runs out by the store's clock
//! (Redis: its key's time to live; files: the machine's), and that decides
//! only when another server may take the zone. A holder whose clock runs
//! slow, or that was paused, keeps ticking past the end of its lease, and
//! everything it then tries to store is refused once another server took
//! the zone (tested: `tests/recovery.rs` in `respawn-zone`, and the zone
//! server tests that pause a holder past its lease). A store clock that
//! jumps forward ends leases early: a spare may take a zone from a live
//! owner, which then stops it, an interruption but never two owners. A
//! holder renews at a third of the time to live, so one late renewal costs
//! nothing.
//!
//! Tokens stay above every one granted before even if the store loses its
//! data: a new token is the larger of the last one plus one and the store's
//! time in milliseconds.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::{StoreError, StoreResult};

/// The token a durable write for a zone carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence(pub u64);

impl Fence {
    /// Writes by a writer that holds no lease: accepted only while no lease
    /// was ever granted for the zone (tools on a stopped deployment, tests).
    pub const NONE: Fence = Fence(0);
}

/// A zone's lease as its holder knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub zone: u32,
    /// The holder's server id.
    pub owner: String,
    /// Larger than the token of every lease granted for the zone before.
    pub token: u64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence(self.token)
    }
}

/// Refuses an owner that could not be stored as one line or used in a key.
pub(crate) fn validate_owner(owner: &str) -> StoreResult<()> {
    if respawn_names::valid_server_id(owner) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("lease owner {owner:?}: 1-64 of a-z 0-9 - _ .")))
    }
}

/// The shortest time to live a lease may be asked for.
pub const MIN_TTL: Duration = Duration::from_millis(50);
/// The longest.
pub const MAX_TTL: Duration = Duration::from_secs(3_600);

pub(crate) fn validate_ttl(ttl: Duration) -> StoreResult<u64> {
    if (MIN_TTL..=MAX_TTL).contains(&ttl) {
        Ok(ttl.as_millis() as u64)
    } else {
        Err(StoreError::Invalid(format!("lease time to live {ttl:?}: 50 ms to an hour")))
    }
}

/// The zones' leases.
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Takes the zone's lease for `owner` for `ttl` when nobody else holds
    /// a live one, with a new token (also when `owner` held it: a restarted
    /// server fences its former self). `None` while another holds it.
    fn acquire<'a>(&'a self, zone: u32, owner: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>>;
    /// Extends the lease for `ttl` while nobody else was granted the zone
    /// since: the live lease is extended, and one that expired (a store out
    /// of reach for longer than its time to live) or was released is taken
    /// back with its token. `None` once another lease was granted: the
    /// holder has been superseded and must stop.
    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> BoxFuture<'a, StoreResult<Option<Lease>>>;
    /// Gives the lease up, if it is still the current one.
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, StoreResult<()>>;
    /// Who holds the zone's lease now, and its token.
    fn holder(&self, zone: u32) -> BoxFuture<'_, StoreResult<Option<(String, u64)>>>;
}

/// The stored form of a live lease: `<token> <owner>`.
pub(crate) fn encode(token: u64, owner: &str) -> String {
    format!("{token} {owner}")
}

pub(crate) fn decode(value: &str) -> StoreResult<(String, u64)> {
    value
        .split_once(' ')
        .and_then(|(token, owner)| Some((owner.to_owned(), token.parse().ok()?)))
        .ok_or_else(|| StoreError::Corrupt(format!("lease {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_leases_read_back_and_garbage_is_corrupt() {
        assert_eq!(decode(&encode(42, "zone-1")).expect("lease"), ("zone-1".to_owned(), 42));
        assert!(matches!(decode("x zone-1"), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode("42"), Err(StoreError::Corrupt(_))));
        assert!(validate_owner("zone 1").is_err() && validate_owner("zone-1").is_ok());
        assert!(validate_ttl(Duration::from_millis(10)).is_err() && validate_ttl(Duration::from_secs(3)).is_ok());
    }
}
