//! Waiting for a certificate's renewal time while watching for its revocation: the agent
//! checks its certificate's status (`<mount>/cert/<serial>`, unauthenticated as in Vault)
//! every [`CHECK_EVERY`], and at once when told to (an attestation verdict that quarantined
//! the device). A revoked certificate is renewed now; a quarantined device's renewal is then
//! refused, and the refusal is what `/healthz`, the metrics and the log report.

use crate::runtime::Shared;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// Between revocation checks of the certificate in place.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(60);

fn now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sleeps until `at` (unix seconds) or shutdown; false on shutdown.
pub(crate) async fn sleep_until_unix(at: f64, stop: &mut watch::Receiver<bool>) -> bool {
    let d = Duration::from_secs_f64((at - now_f64()).max(0.0));
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Whether the PKI mount `mount` says the certificate `serial` is revoked (`false` when it
/// cannot tell: an outage must not trigger renewals).
async fn revoked(s: &Shared, mount: &str, serial: &str) -> bool {
    let url = format!(
        "{}/v1/{}/cert/{serial}",
        s.cfg.server.address,
        mount.trim_matches('/')
    );
    let Ok(r) = s.http.get(url).send().await else {
        return false;
    };
    if !r.status().is_success() {
        return false;
    }
    r.json::<Value>()
        .await
        .ok()
        .and_then(|v| v["data"]["revocation_time"].as_i64())
        .is_some_and(|t| t > 0)
}

/// Waits until `at`, until the certificate `serial` is found revoked (checked every
/// [`CHECK_EVERY`] and whenever `recheck` moves), or shutdown (false).
pub(crate) async fn wait_due(
    s: &Shared,
    name: &str,
    mount: &str,
    serial: Option<&str>,
    at: f64,
    recheck: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Some(serial) = serial else {
        return sleep_until_unix(at, stop).await;
    };
    loop {
        let wake = at.min(now_f64() + CHECK_EVERY.as_secs_f64());
        let d = Duration::from_secs_f64((wake - now_f64()).max(0.0));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            r = recheck.changed() => if r.is_err() { return sleep_until_unix(at, stop).await },
            _ = stop.changed() => return false,
        }
        if *stop.borrow() {
            return false;
        }
        if now_f64() >= at {
            return true;
        }
        if revoked(s, mount, serial).await {
            tracing::warn!(certificate = %name, %serial, "the certificate in place is revoked; renewing now");
            return true;
        }
    }
}
