//! Challenge and response: a fresh nonce per attestation (single use, short-lived, held in
//! memory: a restart only makes devices ask again), then the quote, its signature and the
//! event log in, a verdict out.
//!
//! Evidence that is not authentic (a bad signature, another nonce, a log that does not give
//! the quoted PCRs, a clock that went back) is refused with every reason and changes nothing.
//! Authentic evidence of an untrusted state (an unknown, revoked, unpinned or rolled-back
//! image) is a stored UNTRUSTED verdict. A change of status is logged before it is stored.

use super::config::Parsed;
use super::devices::put;
use super::{b64, now, AttestEngine};
use crate::core::engine::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_attest::eventlog::MAX_LOG_BYTES;
use custos_attest::references::appraise_bundles;
use custos_attest::tpm::Public;
use custos_attest::verify::{
    appraise, firmware_digests, is_authenticity_rule, Evidence, Expected, LastQuote, ReferenceImage,
};
use custos_provenance::bundle::Bundle;
use custos_tlog::entry::Event;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Largest TPMS_ATTEST and TPMT_SIGNATURE accepted.
const MAX_QUOTE: usize = 2048;

/// `devices/<id>/nonce`: a fresh nonce for the device's next quote (replacing any other).
pub async fn nonce(e: &AttestEngine, ctx: &Ctx<'_>, id: &str) -> ApiResult<Response> {
    let cfg = e.config(&ctx.view).await?;
    let r = super::record(&ctx.view, id).await?;
    if r.pending.is_some() {
        return Err(ApiError::bad(format!(
            "device {id} is not enrolled yet (activate it)"
        )));
    }
    let mut n = [0u8; 32];
    aws_lc_rs::rand::fill(&mut n)
        .map_err(|_| ApiError::internal(std::io::Error::other("no randomness")))?;
    let expires = now() + cfg.stored.nonce_ttl as i64;
    e.put_nonce(ctx, id, n.to_vec(), expires);
    Ok(Response::data(json!({
        "nonce": hex::encode(n),
        "expires": crate::core::rfc3339(expires),
        "expires_unix": expires,
    })))
}

/// The provenance of each measured image, appraised by the firmware policy for `class`.
pub(super) async fn references(
    e: &AttestEngine,
    cfg: &Parsed,
    class: &str,
    digests: &[Vec<u8>],
) -> ApiResult<BTreeMap<Vec<u8>, ReferenceImage>> {
    let mut out = BTreeMap::new();
    if digests.is_empty() {
        return Ok(out);
    }
    let crls = if cfg.stored.revocation_pki_mount.is_empty() {
        Vec::new()
    } else {
        e.certs
            .crl(&cfg.stored.revocation_pki_mount)
            .await
            .map(|c| vec![c])
            .unwrap_or_default()
    };
    let crl_sha = custos_attest::tpm::HashAlg::Sha256
        .digest(&[crls.first().map(Vec::as_slice).unwrap_or(&[])]);
    for d in digests {
        let hexd = hex::encode(d);
        let raw = e
            .provenance
            .bundles(&cfg.stored.provenance_mount, &hexd)
            .await?;
        // The firmware policy's decision is cached while its inputs are the same (these
        // bundles, this CRL, this configuration) and for at most REFERENCE_TTL seconds
        // (a bundle's expiry is judged at that precision).
        let key = super::RefKey {
            config: cfg.generation,
            class: class.to_string(),
            bundles: custos_attest::tpm::HashAlg::Sha256.digest(&[&serde_json::to_vec(&raw)?]),
            crl: crl_sha.clone(),
        };
        let t = now();
        if let Some(hit) = e.cached_reference(&key, t) {
            if let Some(r) = hit {
                out.insert(d.clone(), r);
            }
            continue;
        }
        let bundles: Vec<Bundle> = raw
            .iter()
            .filter_map(|b| Bundle::parse(&serde_json::to_vec(b).ok()?).ok())
            .collect();
        let r = appraise_bundles(&hexd, &bundles, &cfg.firmware, class, &crls, t);
        e.cache_reference(key, t, r.clone());
        if let Some(r) = r {
            out.insert(d.clone(), r);
        }
    }
    Ok(out)
}

/// `devices/<id>/quote`: appraises the evidence against the nonce issued, the enrolled AK,
/// the device's last quote and floor, the policy and the provenance store.
pub async fn quote(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let attest = b64(req, "quote", MAX_QUOTE)?;
    let signature = b64(req, "signature", MAX_QUOTE)?;
    let event_log = b64(req, "event_log", MAX_LOG_BYTES)?;
    let cfg = e.config(&ctx.view).await?;
    // The nonce is spent whatever the outcome: a refused quote cannot be retried with it.
    let Some(nonce) = e.take_nonce(ctx, id) else {
        return Err(ApiError::bad(format!(
            "attestation refused: quote.nonce: no outstanding nonce for device {id} (unknown, expired or already used): ask devices/{id}/nonce first"
        )));
    };
    let r0 = super::record(&ctx.view, id).await?;
    let class = cfg.policy.class(&r0.device_class).ok_or_else(|| {
        ApiError::bad(format!(
            "device_class {:?}: not in the attestation policy",
            r0.device_class
        ))
    })?;
    let ak = Public::parse(&hex::decode(&r0.ak_public).unwrap_or_default())
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let refs = references(
        e,
        &cfg,
        &r0.device_class,
        &firmware_digests(&event_log, class),
    )
    .await?;
    let _g = e.lock(id).await;
    // Re-read under the device's lock: the last quote and floor are current.
    let mut r = super::record(&ctx.view, id).await?;
    if r.ak_public != r0.ak_public {
        return Err(ApiError::bad(
            "the device was enrolled again meanwhile: ask a new nonce",
        ));
    }
    let at = now();
    let v = appraise(
        &Evidence {
            attest: &attest,
            signature: &signature,
            event_log: &event_log,
        },
        &Expected {
            ak: &ak,
            nonce: &nonce,
            class,
            last: r.last_quote,
            floor: r.floor,
            now: at,
        },
        &refs,
    );
    let forged: Vec<String> = v
        .failures
        .iter()
        .filter(|f| is_authenticity_rule(f.rule))
        .map(|f| format!("{}: {}", f.rule, f.detail))
        .collect();
    if !forged.is_empty() {
        tracing::warn!(device = %id, reasons = %forged.join("; "), "attestation evidence refused");
        return Err(ApiError::bad(format!(
            "attestation refused: {}",
            forged.join("; ")
        )));
    }
    let status = if v.trusted { "TRUSTED" } else { "UNTRUSTED" };
    let before = r
        .verdict
        .as_ref()
        .and_then(|p| p.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let rules: Vec<String> = v.failures.iter().map(|f| f.rule.to_string()).collect();
    let before_rules: Vec<String> = r
        .verdict
        .as_ref()
        .and_then(|p| p.get("rules"))
        .and_then(|x| serde_json::from_value(x.clone()).ok())
        .unwrap_or_default();
    if before.as_deref() != Some(status) || before_rules != rules {
        e.log
            .append(Event::AttestationChanged {
                mount: ctx.mount.path.clone(),
                device: id.to_string(),
                status: status.into(),
                rules: rules.clone(),
                firmware: v.firmware.iter().map(|m| m.sha256.clone()).collect(),
                requester: ctx.requester(),
            })
            .await?;
    }
    let verdict = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "status": status,
        "rules": rules,
        "failures": v.failures,
        "firmware": v.firmware,
        "pcrs": v.pcrs,
        "at": crate::core::rfc3339(at),
        "at_unix": at,
    });
    if let Some(c) = v.clock {
        r.last_quote = Some(LastQuote {
            clock: c.clock,
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            at,
        });
    }
    if v.trusted {
        r.last_trusted_at = Some(at);
    }
    r.verdict = Some(verdict.clone());
    if !cfg.stored.device_pki_mount.is_empty() {
        // What the device holds, as of this attestation (the fleet's expiry filter).
        if let Ok(certs) = e
            .device_certs
            .bound(
                &cfg.stored.device_pki_mount,
                &r.nf_instance_ids,
                &r.cert_serials,
            )
            .await
        {
            r.cert_not_after = certs
                .iter()
                .filter(|c| c.revoked_at.is_none())
                .map(|c| c.not_after)
                .min();
        }
    }
    put(e, &ctx.view, &r, vec![]).await?;
    drop(_g);
    let mut out = verdict;
    // The closed loop: the class's policy may quarantine the device on this verdict.
    if let Some(q) = super::quarantine::after_verdict(e, ctx.mount, &ctx.view, &r, &cfg).await? {
        out["quarantine"] = q;
    } else if let Some(h) = &r.quarantine {
        out["quarantine"] = json!({"quarantined": true, "reason": h.reason});
    }
    super::rollout::on_device(e, ctx.mount, &ctx.view, id).await;
    Ok(Response::data(out))
}

pub(super) fn seconds(req: &Request, k: &str, default: u64, max: u64) -> ApiResult<u64> {
    match req.data.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            crate::core::duration::parse_duration(&s)
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| ApiError::bad(format!("{k}: a duration from 1s to {max}s")))
        }
    }
}

/// `devices/<id>/attest-now`: asks the device's agent (waiting at `requests`) to attest now,
/// and waits up to `timeout` (default 30 s) for a verdict made after the request.
pub async fn attest_now(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let timeout = seconds(req, "timeout", 30, 300)?;
    let r = super::record(&ctx.view, id).await?;
    if r.pending.is_some() {
        return Err(ApiError::bad(format!(
            "device {id} is not enrolled yet (activate it)"
        )));
    }
    let before = r.verdict.as_ref().and_then(|v| v.get("id")).cloned();
    let key = AttestEngine::nonce_key(ctx, id);
    e.requests.send_modify(|m| {
        *m.entry(key).or_insert(0) += 1;
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    loop {
        let r = super::record(&ctx.view, id).await?;
        if let Some(v) = &r.verdict {
            if v.get("id") != before.as_ref() {
                return Ok(Response::data(v.clone()));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Timeout(timeout));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `devices/<id>/requests`: the number of attestation requests made for the device (since
/// the server started); with `after` = the last number seen, waits up to `wait` (default
/// 30 s) for another.
pub async fn wait_request(
    e: &AttestEngine,
    ctx: &Ctx<'_>,
    id: &str,
    req: &Request,
) -> ApiResult<Response> {
    let wait = seconds(req, "wait", 30, 300)?;
    let after = match req.data.get("after") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
                .parse::<u64>()
                .map_err(|_| ApiError::bad("after: a request number"))?,
        ),
    };
    super::record(&ctx.view, id).await?;
    let key = AttestEngine::nonce_key(ctx, id);
    let mut rx = e.requests.subscribe();
    let current = |rx: &tokio::sync::watch::Receiver<std::collections::HashMap<String, u64>>| {
        rx.borrow().get(&key).copied().unwrap_or(0)
    };
    if let Some(a) = after {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(wait), async {
            while current(&rx) == a {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    let n = current(&rx);
    Ok(Response::data(
        // Any other number is news: a request, or a restarted server (whose count began
        // again), and an extra attestation then is harmless.
        json!({"device": id, "requests": n, "requested": after.is_some_and(|a| n != a)}),
    ))
}
