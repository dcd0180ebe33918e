//! The attestation task of `[attest]` (see [`crate::attest`]): enrol when needed, report
//! installs, then nonce → quote → verdict, every `interval` and on `POST /attest`. The TPM
//! is opened for each round only (a blocking thread), so other TPM users are not locked out.

use crate::attest::AttestConfig;
use crate::runtime::{current_token, CallError, Shared};
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One request to Custos; `Ok(None)` for 404.
async fn api(
    s: &Shared,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Option<Value>, CallError> {
    let mut rb = s
        .http
        .request(method, format!("{}/v1/{path}", s.cfg.server.address))
        .header("X-Vault-Token", token);
    if let Some(b) = &body {
        rb = rb.json(b);
    }
    let r = rb
        .send()
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    let status = r.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    let text = r
        .text()
        .await
        .map_err(|e| CallError::Unreachable(format!("HTTP {status}: {e}")))?;
    let v: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| CallError::Unreachable(format!("HTTP {status}: {e}")))?
    };
    crate::runtime::classify(status, v).map(Some)
}

/// Runs blocking TPM work on a blocking thread.
async fn with_tpm<T: Send + 'static>(
    a: &AttestConfig,
    f: impl FnOnce(&mut custos_tpm::Device) -> Result<T, custos_tpm::TpmError> + Send + 'static,
) -> Result<T, CallError> {
    let (tcti, dir) = (a.tcti.clone(), a.state_dir.clone());
    tokio::task::spawn_blocking(move || {
        let mut d = custos_tpm::Device::open(&tcti, &dir)?;
        f(&mut d)
    })
    .await
    .map_err(|e| CallError::Refused(0, format!("TPM task: {e}")))?
    .map_err(|e| CallError::Refused(0, e.to_string()))
}

/// Enrols the device (EK certificate, AK) and activates the AK with the TPM.
async fn enrol(s: &Shared, a: &AttestConfig, token: &str) -> Result<(), CallError> {
    let (ek, ak, cert) = with_tpm(a, |d| {
        let cert = d.ek_certificate()?;
        Ok((d.ek_public().to_vec(), d.ak_public().to_vec(), cert))
    })
    .await?;
    let dev = format!("{}/devices/{}", a.mount, a.device);
    let v = api(
        s,
        reqwest::Method::PUT,
        &dev,
        token,
        Some(json!({
            "device_class": a.device_class,
            "ek_public": b64(&ek),
            "ek_certificate": b64(&cert),
            "ak_public": b64(&ak),
            "hardware_ids": a.hardware_ids,
            "nf_instance_ids": a.nf_instance_ids,
        })),
    )
    .await?
    .unwrap_or_default();
    let field = |k: &str| -> Result<Vec<u8>, CallError> {
        base64::engine::general_purpose::STANDARD
            .decode(v["data"][k].as_str().unwrap_or_default())
            .map_err(|e| CallError::Refused(0, format!("the enrolment answer's {k}: {e}")))
    };
    let (blob, secret) = (field("credential_blob")?, field("encrypted_secret")?);
    let credential = with_tpm(a, move |d| d.activate(&blob, &secret)).await?;
    api(
        s,
        reqwest::Method::PUT,
        &format!("{dev}/activate"),
        token,
        Some(json!({"credential": b64(&credential)})),
    )
    .await?;
    tracing::info!(device = %a.device, "TPM enrolled: EK certificate accepted, AK activated");
    Ok(())
}

/// The install the firmware state file records, if it changed since the last report.
async fn report_install(s: &Shared, a: &AttestConfig, token: &str) -> Result<(), CallError> {
    let Some(path) = &a.fw_state else {
        return Ok(());
    };
    let Ok(text) = std::fs::read(path) else {
        return Ok(());
    };
    let Ok(st) = serde_json::from_slice::<Value>(&text) else {
        tracing::warn!(file = %path.display(), "the firmware state file is not JSON; installs not reported");
        return Ok(());
    };
    let i = &st["installed"];
    let (Some(sha), Some(version), Some(sv)) = (
        i["digest"]["sha256"].as_str(),
        i["version"].as_str(),
        i["security_version"].as_u64(),
    ) else {
        return Ok(());
    };
    let marker = a.state_dir.join("reported-install");
    let key = format!("{sha} {sv}");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    api(
        s,
        reqwest::Method::PUT,
        &format!("{}/devices/{}/installs", a.mount, a.device),
        token,
        Some(json!({"image_sha256": sha, "version": version, "security_version": sv})),
    )
    .await?;
    if let Err(e) = std::fs::write(&marker, &key) {
        tracing::warn!(error = %e, "cannot record the reported install; it will be reported again");
    }
    tracing::info!(version, security_version = sv, "install reported");
    Ok(())
}

/// One round: enrol if needed, report an install, attest. The verdict's status.
async fn round(s: &Shared, a: &AttestConfig, token: &str) -> Result<String, CallError> {
    let dev = format!("{}/devices/{}", a.mount, a.device);
    let rec = api(s, reqwest::Method::GET, &dev, token, None).await?;
    let pending = rec
        .as_ref()
        .map(|v| v["data"]["pending"].as_bool().unwrap_or(false));
    match pending {
        None | Some(true) if a.enrol => enrol(s, a, token).await?,
        None => {
            return Err(CallError::Refused(
                404,
                format!("device {} is not enrolled in {} (set enrol = true, or enrol it with custos attest enrol)", a.device, a.mount),
            ))
        }
        Some(true) => {
            return Err(CallError::Refused(
                400,
                format!("device {} is waiting for its credential activation", a.device),
            ))
        }
        Some(false) => {}
    }
    report_install(s, a, token).await?;
    let v = api(
        s,
        reqwest::Method::PUT,
        &format!("{dev}/nonce"),
        token,
        Some(json!({})),
    )
    .await?
    .unwrap_or_default();
    let nonce = hex::decode(v["data"]["nonce"].as_str().unwrap_or_default())
        .map_err(|_| CallError::Refused(0, "the nonce is not hex".into()))?;
    let pcrs = a.pcrs.clone();
    let (quote, sig) = with_tpm(a, move |d| d.quote(&nonce, &pcrs)).await?;
    let log = custos_tpm::read_event_log(&a.event_log, 1 << 20)
        .map_err(|e| CallError::Refused(0, e.to_string()))?;
    let v = api(
        s,
        reqwest::Method::PUT,
        &format!("{dev}/quote"),
        token,
        Some(json!({"quote": b64(&quote), "signature": b64(&sig), "event_log": b64(&log)})),
    )
    .await?
    .unwrap_or_default();
    let status = v["data"]["status"].as_str().unwrap_or("?").to_string();
    let rules = v["data"]["rules"].clone();
    if let Some(q) = v["data"]["quarantine"].as_object() {
        let why = q
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        tracing::error!(device = %a.device, %status, reason = %why, "QUARANTINED: Custos has cut this device off; its certificates are revoked until an operator releases it");
        // The certificates check their revocation now (and their renewal reports the refusal).
        s.recheck.send_modify(|n| *n += 1);
        return Ok(format!("QUARANTINED ({status})"));
    }
    if status == "TRUSTED" {
        tracing::info!(device = %a.device, "attested TRUSTED");
    } else {
        tracing::warn!(device = %a.device, %status, %rules, "attested");
    }
    Ok(status)
}

/// Waits at `<mount>/devices/<id>/requests` for an operator's or orchestrator's
/// `attest-now`, and fires `trigger` for each.
pub(crate) async fn requests(
    s: Arc<Shared>,
    a: AttestConfig,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let path = format!("{}/devices/{}/requests", a.mount, a.device);
    // From 0: requests made before the agent first asks are answered too.
    let mut seen: u64 = 0;
    loop {
        let Some(token) = current_token(&s, &mut stop).await else {
            return;
        };
        let q = format!("{path}?after={seen}&wait=25");
        let r = s
            .http
            .get(format!("{}/v1/{q}", s.cfg.server.address))
            .header("X-Vault-Token", token.as_str())
            .timeout(std::time::Duration::from_secs(35))
            .send();
        let got = tokio::select! {
            r = r => r,
            _ = stop.changed() => return,
        };
        let v: Option<Value> = match got {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            Ok(r) => {
                tracing::debug!(status = %r.status(), "waiting for attestation requests");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "waiting for attestation requests");
                None
            }
        };
        match v.as_ref().and_then(|v| v["data"]["requests"].as_u64()) {
            Some(n) => {
                if v.as_ref().and_then(|v| v["data"]["requested"].as_bool()) == Some(true) {
                    tracing::info!(device = %a.device, "attestation requested");
                    trigger.notify_one();
                }
                seen = n;
            }
            None => {
                // Not enrolled yet, or Custos unreachable: ask again shortly.
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// The task: a round every `interval`, or at once when `trigger` fires.
pub(crate) async fn task(
    s: Arc<Shared>,
    a: AttestConfig,
    trigger: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut quarantined = false;
    loop {
        let Some(token) = current_token(&s, &mut stop).await else {
            return;
        };
        match round(&s, &a, &token).await {
            Ok(status) => {
                let now_quarantined = status.starts_with("QUARANTINED");
                if quarantined && !now_quarantined {
                    // Released: the revoked certificates are renewed now.
                    tracing::info!(device = %a.device, "released from quarantine");
                    s.recheck.send_modify(|n| *n += 1);
                }
                quarantined = now_quarantined;
                s.metrics.attestations.fetch_add(1, Relaxed);
                if let Ok(mut l) = s.metrics.attest_status.lock() {
                    *l = Some(status);
                }
            }
            Err(e) => {
                s.metrics.attestation_failures.fetch_add(1, Relaxed);
                tracing::warn!(device = %a.device, error = %e, "attestation failed");
                if let Ok(mut l) = s.metrics.attest_status.lock() {
                    *l = Some(format!("error: {e}"));
                }
                if matches!(e, CallError::Denied(_)) {
                    s.relogin.notify_one();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = trigger.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
