//! The agent's counters and gauges, exported at `/metrics`, and the problems `/healthz`
//! reports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters and gauges, exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Per block: (expiry unix time, renewals, failures, reload failures).
    pub(crate) blocks: BTreeMap<String, BlockMetrics>,
    pub(crate) logins: AtomicU64,
    pub(crate) login_failures: AtomicU64,
    /// `[attest]` is configured.
    pub(crate) attest_enabled: bool,
    /// Attestation rounds that got a verdict.
    pub(crate) attestations: AtomicU64,
    /// Attestation rounds that failed (Custos unreachable, the TPM, a refusal).
    pub(crate) attestation_failures: AtomicU64,
    /// The last verdict's status, or the last round's error.
    pub(crate) attest_status: std::sync::Mutex<Option<String>>,
}

#[derive(Default)]
pub(crate) struct BlockMetrics {
    pub(crate) not_after: AtomicI64,
    pub(crate) renewals: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    /// Why the last attempt failed (`None` after a success), for `/healthz`.
    pub(crate) last_error: std::sync::Mutex<Option<String>>,
}

impl Metrics {
    pub(crate) fn block(&self, name: &str) -> &BlockMetrics {
        static EMPTY: std::sync::OnceLock<BlockMetrics> = std::sync::OnceLock::new();
        self.blocks
            .get(name)
            .unwrap_or_else(|| EMPTY.get_or_init(BlockMetrics::default))
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut family = |name: &str, kind: &str, help: &str, f: &dyn Fn(&BlockMetrics) -> i64| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (b, m) in &self.blocks {
                s.push_str(&format!("{name}{{certificate=\"{b}\"}} {}\n", f(m)));
            }
        };
        family(
            "custos_agent_certificate_expiry_timestamp_seconds",
            "gauge",
            "NotAfter of the certificate in place (0: none yet).",
            &|m| m.not_after.load(Relaxed),
        );
        family(
            "custos_agent_renewals_total",
            "counter",
            "Certificates obtained and rendered.",
            &|m| m.renewals.load(Relaxed) as i64,
        );
        family(
            "custos_agent_renewal_failures_total",
            "counter",
            "Failed attempts to obtain a certificate.",
            &|m| m.failures.load(Relaxed) as i64,
        );
        family(
            "custos_agent_reload_failures_total",
            "counter",
            "Reload commands that failed or timed out.",
            &|m| m.reload_failures.load(Relaxed) as i64,
        );
        s.push_str(&format!(
            "# TYPE custos_agent_logins_total counter\ncustos_agent_logins_total {}\n# TYPE custos_agent_login_failures_total counter\ncustos_agent_login_failures_total {}\n",
            self.logins.load(Relaxed),
            self.login_failures.load(Relaxed)
        ));
        if self.attest_enabled {
            let trusted = self
                .attest_status
                .lock()
                .ok()
                .and_then(|s| s.clone())
                .is_some_and(|s| s == "TRUSTED");
            s.push_str(&format!(
                "# TYPE custos_agent_attestations_total counter\ncustos_agent_attestations_total {}\n# TYPE custos_agent_attestation_failures_total counter\ncustos_agent_attestation_failures_total {}\n# HELP custos_agent_attested_trusted 1 when the last verdict was TRUSTED.\n# TYPE custos_agent_attested_trusted gauge\ncustos_agent_attested_trusted {}\n",
                self.attestations.load(Relaxed),
                self.attestation_failures.load(Relaxed),
                u8::from(trusted)
            ));
        }
        s
    }

    /// True when every block has a certificate that has not expired.
    pub(crate) fn healthy(&self, now: i64) -> bool {
        self.blocks
            .values()
            .all(|m| m.not_after.load(Relaxed) > now)
    }

    /// One line per block that is missing its certificate or failing to renew, with why.
    pub(crate) fn problems(&self, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        for (name, m) in &self.blocks {
            let err = m.last_error.lock().ok().and_then(|e| e.clone());
            let state = match m.not_after.load(Relaxed) {
                0 => "missing",
                t if t <= now => "expired",
                _ if err.is_some() => "renewal failing",
                _ => continue,
            };
            out.push(match err {
                Some(e) => format!("certificate {name}: {state}: {e}"),
                None => format!("certificate {name}: {state}"),
            });
        }
        out.sort();
        out
    }
}
