//! Rate limiting with GCRA (the generic cell rate algorithm): one stored
//! number per key, the theoretical arrival time (TAT) of the next request.
//! The same arithmetic runs in Rust ([`gcra`], used by [`MemoryRateLimiter`]
//! and by a zone server for its players' commands) and in Lua inside Redis
//! ([`crate::redis_store::RedisRateLimiter`]), so every platform server
//! instance shares one limit per key and one clock (Redis's).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::{StoreError, StoreResult};

/// `burst` requests per `period`, refilled evenly: after a full burst one more
/// request is allowed every `period / burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub burst: u32,
    pub period: Duration,
}

impl Quota {
    pub const fn per_second(n: u32) -> Self {
        Self { burst: n, period: Duration::from_secs(1) }
    }

    /// Microseconds between two requests at the sustained rate (at least 1).
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.burst.max(1))).max(1)
    }
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the same request would be allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

/// One GCRA step at `now_us`: the decision and the TAT to store (unchanged
/// when refused). `tat_us` is the stored TAT, `None` for a new key.
pub fn gcra(tat_us: Option<u64>, now_us: u64, quota: Quota) -> (Decision, Option<u64>) {
    let interval = quota.interval_us();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + interval;
    // The burst is spent when the next TAT lies a whole burst ahead of now.
    let allow_at = new_tat.saturating_sub(interval * u64::from(quota.burst.max(1)));
    if now_us < allow_at {
        (Decision::Limited { retry_after: Duration::from_micros(allow_at - now_us) }, tat_us)
    } else {
        (Decision::Allowed, Some(new_tat))
    }
}

/// GCRA state of one key kept in the caller (a connection, a player).
#[derive(Debug, Clone)]
pub struct LocalGcra {
    quota: Quota,
    origin: Instant,
    tat_us: Option<u64>,
}

impl LocalGcra {
    pub fn new(quota: Quota) -> Self {
        Self { quota, origin: Instant::now(), tat_us: None }
    }

    pub fn check(&mut self, now: Instant) -> Decision {
        let (decision, tat) = gcra(self.tat_us, self.micros(now), self.quota);
        self.tat_us = tat;
        decision
    }

    /// Whether the whole burst is available again at `now` (the state can be forgotten).
    pub fn idle(&self, now: Instant) -> bool {
        self.tat_us.is_none_or(|tat| tat <= self.micros(now))
    }

    fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_micros() as u64
    }
}

/// A limiter shared by everything that checks the same keys.
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Counts one request under `key` against `quota`.
    fn check<'a>(&'a self, key: &'a str, quota: Quota) -> BoxFuture<'a, StoreResult<Decision>> {
        self.count(key, quota, Counting::Spend)
    }

    /// What [`Self::check`] would say now, counting nothing: a limit on
    /// failures is looked at before an attempt and spent only when it fails.
    fn peek<'a>(&'a self, key: &'a str, quota: Quota) -> BoxFuture<'a, StoreResult<Decision>> {
        self.count(key, quota, Counting::Peek)
    }

    fn count<'a>(&'a self, key: &'a str, quota: Quota, counting: Counting) -> BoxFuture<'a, StoreResult<Decision>>;
}

/// Whether a limiter's look counts the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    Spend,
    Peek,
}

/// Keys longer than this are refused before they reach a store.
pub const MAX_KEY_LEN: usize = 200;

pub(crate) fn validate_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!("rate-limit key: 1-{MAX_KEY_LEN} printable characters")));
    }
    Ok(())
}

/// The embedded limiter: one process, its own clock.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    origin: Instant,
    tats: Mutex<HashMap<String, u64>>,
}

impl Default for MemoryRateLimiter {
    fn default() -> Self {
        Self { origin: Instant::now(), tats: Mutex::default() }
    }
}

/// Past this many keys, keys whose TAT has passed (a fresh key) are dropped.
const MEMORY_KEYS_BEFORE_SWEEP: usize = 100_000;

impl RateLimiter for MemoryRateLimiter {
    fn count<'a>(&'a self, key: &'a str, quota: Quota, counting: Counting) -> BoxFuture<'a, StoreResult<Decision>> {
        async move {
            validate_key(key)?;
            let now_us = self.origin.elapsed().as_micros() as u64;
            let mut tats = self
                .tats
                .lock()
                .map_err(|_| StoreError::Backend { backend: "memory", message: "rate limiter lock poisoned".into() })?;
            if tats.len() >= MEMORY_KEYS_BEFORE_SWEEP {
                tats.retain(|_, tat| *tat > now_us);
            }
            let (decision, tat) = gcra(tats.get(key).copied(), now_us, quota);
            if let (Some(tat), Counting::Spend) = (tat, counting) {
                tats.insert(key.to_owned(), tat);
            }
            Ok(decision)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let quota = Quota { burst: 3, period: Duration::from_secs(3) };
        let mut tat = None;
        for _ in 0..3 {
            let (d, t) = gcra(tat, 0, quota);
            assert_eq!(d, Decision::Allowed);
            tat = t;
        }
        let (d, t) = gcra(tat, 0, quota);
        assert_eq!(d, Decision::Limited { retry_after: Duration::from_secs(1) });
        assert_eq!(t, tat, "a refused request costs nothing");
        let (d, _) = gcra(tat, 999_999, quota);
        assert!(matches!(d, Decision::Limited { .. }));
        let (d, t) = gcra(tat, 1_000_000, quota);
        assert_eq!(d, Decision::Allowed);
        assert_eq!(gcra(t, 1_000_000, quota).0, Decision::Limited { retry_after: Duration::from_secs(1) });
        // Idle long enough and the whole burst is back.
        let mut tat = t;
        for _ in 0..3 {
            let (d, t) = gcra(tat, 10_000_000, quota);
            assert_eq!(d, Decision::Allowed);
            tat = t;
        }
    }

    #[test]
    fn a_zero_burst_still_allows_one() {
        let quota = Quota { burst: 0, period: Duration::from_secs(1) };
        assert_eq!(gcra(None, 5, quota).0, Decision::Allowed);
    }
}
