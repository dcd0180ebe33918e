//! Login rate limiting: a token bucket per (auth mount, role, source address).
//!
//! A login costs a signature verification, sometimes a JWKS fetch, and an audit record;
//! without a limit one client can spend the server's CPU on refused credentials. Buckets
//! refill at `rate` per second up to `burst`. The table is bounded: when full, buckets that
//! have refilled completely (idle clients) are dropped, and if none has, the oldest half go.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most buckets kept at once.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter shared by every login endpoint.
pub(crate) struct LoginLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LoginLimiter {
    /// `rate` logins per second with bursts of `burst`; a rate of 0 disables limiting.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        LoginLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one login from `key`'s bucket; on refusal returns the seconds until one is free.
    pub(crate) fn take(&self, key: &str) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            self.prune(&mut map, now);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    fn prune(&self, map: &mut HashMap<String, Bucket>, now: Instant) {
        let full_after = self.burst / self.rate;
        map.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full_after);
        if map.len() >= MAX_BUCKETS {
            let mut ages: Vec<Instant> = map.values().map(|b| b.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, b| b.at > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn brute_force_from_one_source_is_throttled_after_the_burst() {
        let l = LoginLimiter::new(2.0, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take_at("m/role/10.0.0.1", t0).is_ok());
        }
        assert_eq!(l.take_at("m/role/10.0.0.1", t0), Err(1));
        // Another source or another role has its own bucket.
        assert!(l.take_at("m/role/10.0.0.2", t0).is_ok());
        assert!(l.take_at("m/other/10.0.0.1", t0).is_ok());
        // Refills at the rate.
        assert!(l
            .take_at("m/role/10.0.0.1", t0 + Duration::from_millis(500))
            .is_ok());
        assert!(l
            .take_at("m/role/10.0.0.1", t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn bucket_table_stays_bounded_under_address_spraying() {
        let l = LoginLimiter::new(1.0, 1);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS + 10) {
            let _ = l.take_at(&format!("m/r/{i}"), t0);
        }
        assert!(l.buckets.lock().map(|m| m.len()).unwrap_or(0) <= MAX_BUCKETS);
    }

    #[test]
    fn zero_rate_disables_limiting() {
        let l = LoginLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(l.take("k").is_ok());
        }
    }
}
