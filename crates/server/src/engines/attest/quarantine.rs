//! Quarantine, the closed loop: a device that fails attestation (or goes stale, or runs an
//! image whose signer a monitor alert names) is cut off from the whole core at once.
//!
//! Order of a quarantine: the record is marked and the event logged (durable), the device's
//! identities enter the in-memory hold list (from then on the NRF refuses its tokens and
//! hides its profile, logins and certificate issuance are refused, and the NRF closes its
//! connections), then every certificate bound to it is revoked in the device PKI mount (the
//! CRL and OCSP say so from then on). Release needs a TRUSTED verdict newer than the
//! quarantine, is logged, and lets the agent's normal renewal issue new certificates.

use super::{config::Parsed, devices::put, find, now, AttestEngine, Record};
use crate::core::barrier::{Plain, View};
use crate::core::services::{Quarantine, Subject};
use crate::error::{ApiError, ApiResult};
use crate::mounts::MountEntry;
use custos_attest::fleet::{auto_quarantine, State};
use custos_attest::policy::Trigger;
use custos_tlog::entry::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Longest reason kept.
const MAX_REASON: usize = 512;

/// Why and since when a device is quarantined.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hold {
    /// Why.
    pub reason: String,
    /// Since when (Unix seconds).
    pub at: i64,
    /// Who: an operator's display name, or `custos` for a policy trigger.
    pub by: String,
    /// The policy trigger (`untrusted`, `stale`, `signer_alert`), `None` for an operator.
    pub trigger: Option<String>,
    /// Serials of the certificates revoked with it.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// The identities of quarantined devices, answered from memory.
pub struct Holds {
    by_key: RwLock<HashMap<String, Arc<str>>>,
    tx: tokio::sync::watch::Sender<u64>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            by_key: RwLock::new(HashMap::new()),
            tx: tokio::sync::watch::channel(0).0,
        }
    }
}

fn serial_key(s: &str) -> String {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("serial:{}", s.trim_start_matches('0'))
}

/// The hold-list keys of a device's identities.
fn keys(r: &Record) -> Vec<String> {
    let mut k: Vec<String> = r
        .nf_instance_ids
        .iter()
        .map(|i| format!("nf:{}", i.to_ascii_lowercase()))
        .collect();
    k.extend(r.cert_serials.iter().map(|s| serial_key(s)));
    k.extend(r.logins.iter().map(|l| format!("login:{l}")));
    k
}

impl Holds {
    /// Holds `r`'s identities (its `quarantine` must be set).
    pub fn hold(&self, mount: &str, r: &Record) {
        let Some(h) = &r.quarantine else { return };
        let why: Arc<str> =
            format!("device {} ({mount}) is quarantined: {}", r.id, h.reason).into();
        if let Ok(mut m) = self.by_key.write() {
            for k in keys(r) {
                m.insert(k, why.clone());
            }
        }
        self.tx.send_modify(|n| *n += 1);
    }

    /// Lets `r`'s identities go.
    pub fn release(&self, r: &Record) {
        if let Ok(mut m) = self.by_key.write() {
            for k in keys(r) {
                m.remove(&k);
            }
        }
        self.tx.send_modify(|n| *n += 1);
    }

    /// Forgets everything (at seal).
    pub fn clear(&self) {
        if let Ok(mut m) = self.by_key.write() {
            m.clear();
        }
        self.tx.send_modify(|n| *n += 1);
    }
}

impl Quarantine for Holds {
    fn refusal(&self, who: &Subject<'_>) -> Option<String> {
        let m = self.by_key.read().ok()?;
        if m.is_empty() {
            return None;
        }
        let hit = |k: String| m.get(&k).map(|w| w.to_string());
        who.nf_instance_ids
            .iter()
            .find_map(|i| hit(format!("nf:{}", i.to_ascii_lowercase())))
            .or_else(|| who.cert_serial.and_then(|s| hit(serial_key(s))))
            .or_else(|| who.display_name.and_then(|d| hit(format!("login:{d}"))))
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

fn reason_of(v: Option<&Value>) -> ApiResult<String> {
    let r = v
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("reason: required"))?;
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "reason: at most {MAX_REASON} printable characters"
        )));
    }
    Ok(r.to_string())
}

/// Quarantines device `id` (already quarantined: nothing changes, the hold is answered).
pub async fn quarantine(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    id: &str,
    reason: &str,
    by: &str,
    trigger: Option<Trigger>,
) -> ApiResult<Value> {
    let cfg = e.config(view).await?;
    let held = {
        let _g = e.lock(id).await;
        let mut r = find(view, id).await?.ok_or(ApiError::NotFound)?;
        if let Some(h) = &r.quarantine {
            return Ok(json!({"device": id, "quarantined": true, "changed": false, "hold": h}));
        }
        if r.pending.is_some() {
            return Err(ApiError::bad(format!(
                "device {id} is not enrolled yet: delete the pending enrolment instead"
            )));
        }
        r.quarantine = Some(Hold {
            reason: reason.to_string(),
            at: now(),
            by: by.to_string(),
            trigger: trigger.map(|t| t.as_str().to_string()),
            revoked: Vec::new(),
        });
        e.log
            .append(Event::DeviceQuarantine {
                mount: mount.path.clone(),
                device: id.to_string(),
                op: "quarantine".into(),
                reason: reason.to_string(),
                revoked: Vec::new(),
                requester: by.to_string(),
            })
            .await?;
        put(
            e,
            view,
            &r,
            vec![Plain::Put(format!("quarantined/{id}"), b"1".to_vec())],
        )
        .await?;
        e.holds.hold(&mount.path, &r);
        tracing::warn!(device = %id, reason = %reason, by = %by, "device quarantined");
        r
    };
    let revoked = revoke_certs(e, &cfg, &held, by).await?;
    if !revoked.is_empty() {
        let _g = e.lock(id).await;
        if let Some(mut r) = find(view, id).await? {
            if let Some(h) = &mut r.quarantine {
                h.revoked = revoked.clone();
            }
            put(e, view, &r, vec![]).await?;
        }
    }
    e.notify(
        mount,
        "isolate",
        json!({"device": id, "reason": reason, "revoked": revoked}),
    )
    .await;
    Ok(json!({
        "device": id,
        "quarantined": true,
        "changed": true,
        "reason": reason,
        "revoked": revoked,
    }))
}

/// Revokes the device's certificates in the configured device PKI mount.
async fn revoke_certs(
    e: &AttestEngine,
    cfg: &Parsed,
    r: &Record,
    by: &str,
) -> ApiResult<Vec<String>> {
    if cfg.stored.device_pki_mount.is_empty() {
        return Ok(Vec::new());
    }
    e.device_certs
        .revoke_bound(
            &cfg.stored.device_pki_mount,
            &r.nf_instance_ids,
            &r.cert_serials,
            &format!("quarantine of device {} by {by}", r.id),
        )
        .await
}

/// Releases device `id`: it needs a TRUSTED verdict newer than its quarantine.
pub async fn release(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    id: &str,
    reason: &str,
    by: &str,
) -> ApiResult<Value> {
    let _g = e.lock(id).await;
    let mut r = find(view, id).await?.ok_or(ApiError::NotFound)?;
    let Some(h) = r.quarantine.clone() else {
        return Ok(json!({"device": id, "quarantined": false, "changed": false}));
    };
    let fresh = r.verdict.as_ref().is_some_and(|v| {
        v.get("status").and_then(Value::as_str) == Some("TRUSTED")
            && v.get("at_unix").and_then(Value::as_i64).unwrap_or(0) >= h.at
    });
    if !fresh {
        return Err(ApiError::bad(format!(
            "device {id} has no TRUSTED verdict since its quarantine (at {}): have it attest (attest/devices/{id}/attest-now) and release it when it is TRUSTED",
            crate::core::rfc3339(h.at)
        )));
    }
    e.log
        .append(Event::DeviceQuarantine {
            mount: mount.path.clone(),
            device: id.to_string(),
            op: "release".into(),
            reason: reason.to_string(),
            revoked: Vec::new(),
            requester: by.to_string(),
        })
        .await?;
    r.quarantine = None;
    put(
        e,
        view,
        &r,
        vec![Plain::Delete(format!("quarantined/{id}"))],
    )
    .await?;
    e.holds.release(&r);
    tracing::warn!(device = %id, reason = %reason, by = %by, "device released from quarantine");
    Ok(json!({"device": id, "quarantined": false, "changed": true, "released_after": h.reason}))
}

/// After a verdict: the class's policy may quarantine the device.
pub async fn after_verdict(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    r: &Record,
    cfg: &Parsed,
) -> ApiResult<Option<Value>> {
    let Some(class) = cfg.policy.class(&r.device_class) else {
        return Ok(None);
    };
    if r.quarantine.is_some() {
        return Ok(None);
    }
    let st = match r.status(now(), Some(class.interval)) {
        "UNTRUSTED" => State::Untrusted,
        "STALE" => State::Stale,
        _ => return Ok(None),
    };
    let Some(why) = auto_quarantine(class, st, r.last_trusted_at, now()) else {
        return Ok(None);
    };
    let trigger = if st == State::Untrusted {
        Trigger::Untrusted
    } else {
        Trigger::Stale
    };
    let rules = r
        .verdict
        .as_ref()
        .and_then(|v| v.get("rules"))
        .map(Value::to_string)
        .unwrap_or_default();
    let reason = if st == State::Untrusted {
        format!("{why} {rules}")
    } else {
        why
    };
    quarantine(e, mount, view, &r.id, &reason, "custos", Some(trigger))
        .await
        .map(Some)
}

/// Devices of classes that quarantine on `stale`, past their grace period.
pub async fn sweep_stale(e: &AttestEngine, mount: &MountEntry, view: &View) -> ApiResult<usize> {
    let cfg = e.config(view).await?;
    if !cfg
        .policy
        .classes
        .iter()
        .any(|c| c.quarantines_on(Trigger::Stale))
    {
        return Ok(0);
    }
    let ids = e
        .with_fleet(mount, view, |f| {
            let t = now();
            f.iter()
                .filter(|d| {
                    cfg.policy.class(&d.class).is_some_and(|c| {
                        d.state(t, Some(c.interval)) == State::Stale
                            && auto_quarantine(c, State::Stale, d.last_trusted_at, t).is_some()
                    })
                })
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        })
        .await?;
    let mut n = 0;
    for id in ids {
        if let Some(r) = find(view, &id).await? {
            if after_verdict(e, mount, view, &r, &cfg).await?.is_some() {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// A monitor alert names `signer`: devices of classes that quarantine on `signer_alert`
/// whose measured image that signer signed are quarantined.
pub async fn signer_alert(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    signer: &str,
    reason: &str,
    by: &str,
) -> ApiResult<Value> {
    let cfg = e.config(view).await?;
    let ids = e
        .with_fleet(mount, view, |f| {
            f.iter()
                .filter(|d| {
                    cfg.policy
                        .class(&d.class)
                        .is_some_and(|c| c.quarantines_on(Trigger::SignerAlert))
                        && d.quarantine.is_none()
                        && d.measured
                            .as_ref()
                            .is_some_and(|m| m.signers.iter().any(|s| s == signer))
                })
                .map(|d| d.id.clone())
                .collect::<Vec<_>>()
        })
        .await?;
    let why = format!("policy signer_alert: signer {signer}: {reason}");
    let mut done = Vec::new();
    for id in ids {
        quarantine(e, mount, view, &id, &why, by, Some(Trigger::SignerAlert)).await?;
        done.push(id);
    }
    Ok(json!({"signer": signer, "quarantined": done}))
}

/// Quarantines many devices at once (a recall): each as [`quarantine`] does, several at a
/// time.
pub async fn recall(
    e: &AttestEngine,
    mount: &MountEntry,
    view: &View,
    ids: Vec<String>,
    reason: &str,
    by: &str,
) -> ApiResult<Value> {
    use futures_util::StreamExt;
    let results: Vec<ApiResult<Value>> = futures_util::stream::iter(ids)
        .map(|id| async move { quarantine(e, mount, view, &id, reason, by, None).await })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut changed = 0;
    for r in results {
        if r?.get("changed").and_then(Value::as_bool) == Some(true) {
            changed += 1;
        }
    }
    Ok(json!({"quarantined": changed}))
}

/// The request's reason field.
pub fn reason(req: &crate::logical::Request) -> ApiResult<String> {
    reason_of(req.data.get("reason"))
}
