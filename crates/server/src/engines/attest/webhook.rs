//! The orchestrator webhook: what the operator's orchestrator must do (isolate, install,
//! roll back, re-sign), delivered from a durable outbox.
//!
//! An event is stored in the barrier (`outbox/<time>-<uuid>`) in the same request that
//! caused it, then POSTed to `webhook_url` as JSON with
//! `X-Custos-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under webhook_secret>`,
//! `X-Custos-Timestamp` and `X-Custos-Event-Id` (receivers drop repeats by ID). A 2xx answer
//! removes it; anything else is retried with exponential backoff (1 s doubling to 5 min),
//! across restarts, for as long as it takes: nothing is dropped.

use super::{now, AttestEngine};
use crate::core::barrier::{Plain, View};
use crate::core::engine::Sys;
use crate::error::ApiResult;
use crate::mounts::MountEntry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Events sent per mount per pass.
const BATCH: usize = 64;
/// Longest wait between retries (seconds).
const MAX_BACKOFF: i64 = 300;

/// One outbox entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// Event ID (the key's UUID part).
    pub id: String,
    /// `isolate`, `install`, `rollback`, `release`, `resign`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The attestation mount.
    pub mount: String,
    /// When it was made (Unix seconds).
    pub at: i64,
    /// What to do, to what.
    pub data: Value,
    /// Deliveries tried.
    #[serde(default)]
    pub attempts: u32,
    /// Not before (Unix seconds).
    #[serde(default)]
    pub next_at: i64,
    /// The last failure.
    #[serde(default)]
    pub last_error: String,
}

/// HMAC-SHA256 of `<timestamp>.<body>` under `secret`, hex.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

/// The outbox operation that stores an event (to be written with what caused it), or
/// `None` when the mount has no webhook.
pub fn event_op(mount: &MountEntry, url_set: bool, kind: &str, data: Value) -> Option<Plain> {
    if !url_set {
        return None;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let t = now();
    let o = Outgoing {
        id: id.clone(),
        kind: kind.to_string(),
        mount: mount.path.clone(),
        at: t,
        data,
        attempts: 0,
        next_at: 0,
        last_error: String::new(),
    };
    let key = format!(
        "outbox/{:020}-{id}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    Some(Plain::Put(key, serde_json::to_vec(&o).ok()?))
}

impl AttestEngine {
    /// Stores an event for the orchestrator (when the mount has a webhook) and wakes the
    /// sender. Failing to store it is logged, not answered: the change it reports is done.
    pub(super) async fn notify(&self, mount: &MountEntry, kind: &str, data: Value) {
        let Some(sys) = self.sys.get() else { return };
        let Ok(view) = sys.view(mount) else { return };
        let Ok(cfg) = self.config(&view).await else {
            return;
        };
        if let Some(op) = event_op(mount, !cfg.stored.webhook_url.is_empty(), kind, data) {
            if let Err(e) = view.write(vec![op]).await {
                tracing::error!(error = %e, kind, "webhook event could not be stored");
            }
            self.wake.notify_one();
        }
    }
}

/// Pending events of a mount: how many, the oldest, and the last error.
pub async fn status(view: &View) -> ApiResult<Value> {
    let keys = view.list("outbox/").await?;
    let first = match keys.first() {
        Some(k) => view.get_json::<Outgoing>(&format!("outbox/{k}")).await?,
        None => None,
    };
    Ok(json!({
        "pending": keys.len(),
        "oldest": first.as_ref().map(|o| crate::core::rfc3339(o.at)),
        "attempts": first.as_ref().map(|o| o.attempts),
        "last_error": first.as_ref().map(|o| o.last_error.clone()),
    }))
}

/// Delivers every mount's due events until the core seals (then waits for the next unseal).
pub async fn run(e: std::sync::Arc<AttestEngine>, sys: Sys) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "webhook client");
            return;
        }
    };
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), e.wake.notified()).await;
        let Ok(mounts) = sys.mounts().await else {
            continue;
        };
        for m in mounts {
            if let Err(err) = deliver(&e, &sys, &m, &client).await {
                tracing::debug!(mount = %m.path, error = %err, "webhook delivery pass");
            }
        }
    }
}

async fn deliver(
    e: &AttestEngine,
    sys: &Sys,
    m: &MountEntry,
    client: &reqwest::Client,
) -> ApiResult<()> {
    let view = sys.view(m)?;
    let keys = view.list("outbox/").await?;
    if keys.is_empty() {
        return Ok(());
    }
    let cfg = e.config(&view).await?;
    let (url, secret) = (&cfg.stored.webhook_url, &cfg.stored.webhook_secret);
    if url.is_empty() {
        return Ok(());
    }
    let t = now();
    for k in keys.into_iter().take(BATCH) {
        let key = format!("outbox/{k}");
        let Some(mut o) = view.get_json::<Outgoing>(&key).await? else {
            continue;
        };
        if o.next_at > t {
            continue;
        }
        let body = serde_json::to_vec(&json!({
            "id": o.id, "type": o.kind, "mount": o.mount, "at": o.at, "data": o.data,
        }))?;
        let ts = now();
        let sig = signature(secret.as_bytes(), ts, &body);
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-custos-event-id", &o.id)
            .header("x-custos-timestamp", ts.to_string())
            .header("x-custos-signature", format!("sha256={sig}"))
            .body(body)
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().is_success() => {
                view.write(vec![Plain::Delete(key)]).await?;
            }
            other => {
                o.last_error = match other {
                    Ok(resp) => format!("HTTP {}", resp.status()),
                    Err(err) => err.to_string(),
                };
                o.attempts += 1;
                o.next_at = ts + (1i64 << o.attempts.min(9)).min(MAX_BACKOFF);
                view.put_json(&key, &o).await?;
                // In order: a later event waits for an earlier one to the same receiver.
                break;
            }
        }
    }
    Ok(())
}
