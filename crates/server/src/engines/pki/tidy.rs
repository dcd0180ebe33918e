//! PKI tidy: removes expired certificates (and expired revoked ones) from the inventory.
//!
//! It walks the `(mount, not_after)` index in pages of 1,000, deletes each page in one
//! transaction and yields between pages, so issuance is never blocked and no full scan
//! happens. Runs are tracked per mount (`tidy-status`) and can be cancelled (`tidy-cancel`).
//! `config/auto-tidy` schedules runs from the server's background ticker.

use super::{bump_generation, IssuerCache, Pk};
use crate::core::barrier::{Plain, View};
use crate::core::{now_unix, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::logical::Response;
use crate::mounts::MountEntry;
use custos_pki::fields;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const PAGE: usize = 1_000;
const DEFAULT_SAFETY_BUFFER: u64 = 72 * 3600;

/// The state of the last (or current) run on a mount.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TidyStatus {
    state: &'static str,
    error: String,
    time_started: String,
    time_finished: String,
    safety_buffer: u64,
    tidy_cert_store: bool,
    tidy_revoked_certs: bool,
    cert_store_deleted_count: u64,
    revoked_cert_deleted_count: u64,
    #[serde(skip)]
    cancel: Arc<AtomicBool>,
}

fn idle() -> Value {
    json!({"state": "Inactive", "cert_store_deleted_count": 0, "revoked_cert_deleted_count": 0})
}

pub(crate) fn status(a: &Pk<'_>, m: &MountEntry) -> Value {
    a.issuers
        .tidy
        .lock()
        .ok()
        .and_then(|t| {
            t.get(&m.uuid)
                .map(|s| serde_json::to_value(s).unwrap_or_else(|_| idle()))
        })
        .unwrap_or_else(idle)
}

pub(crate) fn cancel(a: &Pk<'_>, m: &MountEntry) -> Value {
    if let Ok(mut t) = a.issuers.tidy.lock() {
        if let Some(s) = t.get_mut(&m.uuid) {
            if s.state == "Running" {
                s.cancel.store(true, Ordering::SeqCst);
                s.state = "Cancelling";
            }
        }
    }
    status(a, m)
}

/// Starts a run. `auto` runs use the stored auto-tidy settings.
pub(crate) async fn start(
    a: &Pk<'_>,
    m: &MountEntry,
    d: &Map<String, Value>,
    auto: bool,
) -> ApiResult<Response> {
    let tidy_cert_store = fields::bool_of(d, "tidy_cert_store", false)?;
    let tidy_revoked_certs = fields::bool_of(d, "tidy_revoked_certs", false)?;
    let safety_buffer = match fields::duration_of(d, "safety_buffer")? {
        0 => DEFAULT_SAFETY_BUFFER,
        s => s,
    };
    for unsupported in [
        "tidy_acme",
        "tidy_expired_issuers",
        "tidy_move_legacy_ca_bundle",
        "tidy_cross_cluster_revoked_certs",
    ] {
        if fields::bool_of(d, unsupported, false)? {
            return Err(ApiError::bad(format!(
                "{unsupported}: not supported by this build"
            )));
        }
    }
    if !tidy_cert_store && !tidy_revoked_certs && !auto {
        return Err(ApiError::bad(
            "at least one of tidy_cert_store or tidy_revoked_certs must be true",
        ));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut t = a
            .issuers
            .tidy
            .lock()
            .map_err(|_| ApiError::internal(std::io::Error::other("tidy lock")))?;
        if t.get(&m.uuid)
            .is_some_and(|s| s.state == "Running" || s.state == "Cancelling")
        {
            return Err(ApiError::bad(
                "a tidy operation is already running on this mount",
            ));
        }
        t.insert(
            m.uuid.clone(),
            TidyStatus {
                state: "Running",
                error: String::new(),
                time_started: rfc3339(now_unix()),
                time_finished: String::new(),
                safety_buffer,
                tidy_cert_store,
                tidy_revoked_certs,
                cert_store_deleted_count: 0,
                revoked_cert_deleted_count: 0,
                cancel: cancel.clone(),
            },
        );
    }
    let (v, ic) = (a.view.clone(), a.issuers.clone());
    let m2 = m.clone();
    tokio::spawn(async move {
        let r = run(
            &v,
            &ic,
            &m2,
            safety_buffer,
            tidy_cert_store,
            tidy_revoked_certs,
            &cancel,
        )
        .await;
        if let Ok(mut t) = ic.tidy.lock() {
            if let Some(s) = t.get_mut(&m2.uuid) {
                s.time_finished = rfc3339(now_unix());
                match r {
                    Ok(()) if cancel.load(Ordering::SeqCst) => s.state = "Cancelled",
                    Ok(()) => s.state = "Finished",
                    Err(e) => {
                        tracing::error!(error = %e, mount = %m2.path, "pki tidy failed");
                        s.state = "Error";
                        s.error = "tidy failed; see the server log".into();
                    }
                }
            }
        }
    });
    Ok(Response {
        status: Some(202),
        warnings: vec!["Tidy operation successfully started. Any information from the operation will be printed to Custos's server logs.".into()],
        data: Some(Map::new()),
        ..Default::default()
    })
}

async fn run(
    a: &View,
    issuers: &IssuerCache,
    m: &MountEntry,
    buffer: u64,
    certs: bool,
    revoked: bool,
    cancel: &AtomicBool,
) -> ApiResult<()> {
    let cutoff = now_unix() - buffer as i64;
    let mut touched_revoked = false;
    loop {
        if cancel.load(Ordering::SeqCst) {
            break;
        }
        let page = a.certs_expiring_before(cutoff, PAGE).await?;
        if page.is_empty() {
            break;
        }
        let full = page.len() == PAGE;
        let mut ops = Vec::new();
        let (mut n_certs, mut n_revoked) = (0u64, 0u64);
        for row in page {
            let is_revoked = row.revoked_at.is_some();
            if (is_revoked && revoked) || (!is_revoked && certs) {
                ops.push(Plain::DeleteCert(row.mount, row.serial));
                if is_revoked {
                    n_revoked += 1;
                } else {
                    n_certs += 1;
                }
            }
        }
        if ops.is_empty() {
            // Everything expired is of a kind this run keeps; nothing more to do.
            break;
        }
        a.write(ops).await?;
        touched_revoked |= n_revoked > 0;
        if let Ok(mut t) = issuers.tidy.lock() {
            if let Some(s) = t.get_mut(&m.uuid) {
                s.cert_store_deleted_count += n_certs;
                s.revoked_cert_deleted_count += n_revoked;
            }
        }
        if !full {
            break;
        }
        tokio::task::yield_now().await;
    }
    if touched_revoked {
        bump_generation(issuers, m);
    }
    Ok(())
}

const AUTO_KEY: &str = "config/auto-tidy";

pub(crate) async fn auto_config(a: &Pk<'_>, _m: &MountEntry) -> ApiResult<Value> {
    Ok(a.get_json(AUTO_KEY).await?.unwrap_or_else(|| {
        json!({"enabled": false, "interval_duration": 12 * 3600, "tidy_cert_store": false, "tidy_revoked_certs": false, "safety_buffer": DEFAULT_SAFETY_BUFFER, "last_run": 0})
    }))
}

pub(crate) async fn write_auto_config(
    a: &Pk<'_>,
    m: &MountEntry,
    d: &Map<String, Value>,
) -> ApiResult<Response> {
    let mut c = auto_config(a, m).await?;
    for k in ["enabled", "tidy_cert_store", "tidy_revoked_certs"] {
        if d.contains_key(k) {
            c[k] = json!(fields::bool_of(d, k, false)?);
        }
    }
    for k in ["interval_duration", "safety_buffer"] {
        if d.contains_key(k) {
            let v = fields::duration_of(d, k)?;
            if v == 0 {
                return Err(ApiError::bad(format!("{k}: must be positive")));
            }
            c[k] = json!(v);
        }
    }
    if c["enabled"] == json!(true)
        && c["tidy_cert_store"] != json!(true)
        && c["tidy_revoked_certs"] != json!(true)
    {
        return Err(ApiError::bad(
            "auto-tidy needs tidy_cert_store or tidy_revoked_certs",
        ));
    }
    a.put_json(AUTO_KEY, &c).await?;
    Ok(Response::data(c))
}

/// Called by the background ticker for each pki mount: starts its auto-tidy run if due.
pub(crate) async fn auto_tick(a: &Pk<'_>, m: &MountEntry) -> ApiResult<()> {
    let now = now_unix();
    let mut c = auto_config(a, m).await?;
    if c["enabled"] != json!(true) {
        return Ok(());
    }
    let last = c["last_run"].as_i64().unwrap_or(0);
    let every = c["interval_duration"].as_i64().unwrap_or(12 * 3600);
    if now - last < every {
        return Ok(());
    }
    c["last_run"] = json!(now);
    a.put_json(AUTO_KEY, &c).await?;
    let d = c.as_object().cloned().unwrap_or_default();
    if let Err(e) = start(a, m, &d, true).await {
        tracing::warn!(error = %e, mount = %m.path, "auto-tidy did not start");
    }
    Ok(())
}
