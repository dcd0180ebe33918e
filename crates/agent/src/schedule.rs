//! When to renew, and how long to wait after a failure. Pure: time and randomness come in as
//! arguments, so the storm test runs the same code as the agent.
//!
//! A certificate valid from `nb` to `na` (lifetime `L`) is renewed at
//!
//! ```text
//! nb + L * (renew_fraction - stagger * h - jitter * r)
//! ```
//!
//! where `h` in [0, 1) is derived from the NF instance ID (SHA-256, so the same instance always
//! gets the same slot and different instances spread evenly; TS 33.310 Annex I asks that
//! thousands of NFs not hit the CA in the same second) and `r` in [0, 1) is fresh randomness.
//! Both only move renewal earlier, never closer to expiry than `renew_fraction` says.

use std::time::Duration;

/// Renewal parameters of one certificate block.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Nominal point, as a fraction of the lifetime (default 2/3).
    pub renew_fraction: f64,
    /// Deterministic per-instance spread (fraction of the lifetime).
    pub stagger: f64,
    /// Random spread (fraction of the lifetime).
    pub jitter: f64,
}

/// The instance's slot in [0, 1): the first 8 bytes of SHA-256(`instance`) as a fraction.
pub fn stagger_slot(instance: &str) -> f64 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, instance.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl Plan {
    /// Unix time (seconds, fractional) to renew a certificate valid `[not_before, not_after]`.
    /// `slot` comes from [`stagger_slot`], `random` is uniform in [0, 1).
    pub fn renew_at(&self, not_before: i64, not_after: i64, slot: f64, random: f64) -> f64 {
        let life = (not_after - not_before).max(0) as f64;
        let f = self.renew_fraction
            - self.stagger * slot.clamp(0.0, 1.0)
            - self.jitter * random.clamp(0.0, 1.0);
        not_before as f64 + life * f
    }

    /// The renewal window of a lifetime: from the nominal renewal point to expiry.
    pub fn window(&self, not_before: i64, not_after: i64) -> f64 {
        (not_after - not_before).max(0) as f64 * (1.0 - self.renew_fraction)
    }
}

/// Exponential backoff with a cap and ±20% jitter; reset after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt (`random` uniform in [0, 1)), and doubles the next.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 0.8 + 0.4 * random.clamp(0.0, 1.0);
        base.mul_f64(factor)
            .min(self.max)
            .max(Duration::from_millis(100))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A uniform random number in [0, 1) from the system CSPRNG.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: Plan = Plan {
        renew_fraction: 2.0 / 3.0,
        stagger: 0.1,
        jitter: 0.02,
    };

    fn uuid_like(i: u32) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &i.to_be_bytes());
        let h = hex(d.as_ref());
        format!(
            "{}-{}-4{}-8{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// TS 33.310 Annex I: 1,000 NFs whose certificates were issued in the same second must not
    /// renew in the same second. The renewal times of 1,000 schedulers spread over at least 20%
    /// of the renewal window; the histogram is printed (`cargo test -- --nocapture`).
    #[test]
    fn ts33310_annex_i_storm_of_1000_same_second_certificates_spreads_renewals() {
        let (nb, na) = (1_800_000_000_i64, 1_800_000_000 + 86_400);
        let times: Vec<f64> = (0..1000)
            .map(|i| PLAN.renew_at(nb, na, stagger_slot(&uuid_like(i)), random_unit()))
            .collect();
        let lo = times.iter().cloned().fold(f64::MAX, f64::min);
        let hi = times.iter().cloned().fold(f64::MIN, f64::max);
        let window = PLAN.window(nb, na);
        let spread = (hi - lo) / window;
        // Histogram in 10 buckets over [lo, hi].
        let mut buckets = [0usize; 10];
        for t in &times {
            let i = (((t - lo) / (hi - lo)) * 10.0).min(9.0) as usize;
            buckets[i] += 1;
        }
        println!(
            "renewal spread: {:.0} s = {:.1}% of the {:.0} s renewal window",
            hi - lo,
            spread * 100.0,
            window
        );
        for (i, n) in buckets.iter().enumerate() {
            let from = lo + (hi - lo) * i as f64 / 10.0 - nb as f64;
            println!("  +{from:>7.0} s  {n:>4} {}", "#".repeat(n / 4));
        }
        assert!(spread >= 0.20, "spread {spread}");
        // Nobody renews after the nominal point or in the last third.
        assert!(hi <= nb as f64 + 86_400.0 * 2.0 / 3.0 + 1e-6);
        // No bucket holds more than a quarter of the fleet (no thundering herd).
        assert!(buckets.iter().all(|n| *n < 250), "{buckets:?}");
        // At most 1% in any one second.
        let mut secs = std::collections::HashMap::new();
        for t in &times {
            *secs.entry(*t as i64).or_insert(0usize) += 1;
        }
        assert!(secs.values().all(|n| *n <= 10));
    }

    #[test]
    fn same_instance_gets_the_same_slot_and_renewal_never_passes_the_nominal_point() {
        let id = "4947a69a-f61b-4bc1-b9da-47c9c5d14b64";
        assert_eq!(stagger_slot(id), stagger_slot(id));
        assert_ne!(
            stagger_slot(id),
            stagger_slot("4947a69a-f61b-4bc1-b9da-47c9c5d14b65")
        );
        for r in [0.0, 0.5, 0.999_999] {
            let t = PLAN.renew_at(0, 30, stagger_slot(id), r);
            assert!(
                (30.0 * (2.0 / 3.0 - 0.12) - 1e-9..=20.0 + 1e-9).contains(&t),
                "{t}"
            );
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 8, 8]);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_secs(1));
        assert!(b.next_delay(0.999) <= Duration::from_secs(8));
    }
}
