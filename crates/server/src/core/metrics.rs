//! A small Prometheus text-format registry.
//!
//! Hand-written rather than the `metrics` crate: that crate's recorder is process-global,
//! which breaks several in-process servers in one test binary, and the set of series here
//! is small and fixed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000];

/// Request counters and a latency histogram.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    buckets: [AtomicU64; 10],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, code: u16, elapsed: std::time::Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_string(), code)).or_default() += 1;
        }
        let ms = elapsed.as_millis() as u64;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every series, plus the gauges passed in.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP custos_http_requests_total HTTP requests by method and status code."
        );
        let _ = writeln!(s, "# TYPE custos_http_requests_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((method, code), n) in m.iter() {
                let _ = writeln!(
                    s,
                    "custos_http_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP custos_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(s, "# TYPE custos_http_request_duration_seconds histogram");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                s,
                "custos_http_request_duration_seconds_bucket{{le=\"{}\"}} {}",
                *b as f64 / 1000.0,
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "custos_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "custos_http_request_duration_seconds_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "custos_http_request_duration_seconds_count {count}");
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} gauge");
            let _ = writeln!(s, "{name} {v}");
        }
        s
    }
}
