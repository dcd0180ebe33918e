//! `posture`: the regular supply-chain assessment. Findings from the PKI (certificates
//! expiring, weak keys and SHA-1 in CAs, roles and certificates), the provenance store
//! (signing keys past their rotation schedule) and the fleet (devices never attested,
//! devices whose certificates expire soon, suppliers and builders whose images failed
//! attestation), each with its rule and the object it names.

use super::{now, AttestEngine, Record};
use crate::core::engine::Ctx;
use crate::core::services::Finding;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn duration(req: &Request, k: &str) -> ApiResult<Option<i64>> {
    match req.data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let s = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            crate::core::duration::parse_duration(&s)
                .map(|n| Some(n as i64))
                .map_err(|_| ApiError::bad(format!("{k} {s:?}: a duration like 30d")))
        }
    }
}

/// `posture` (`expiring_within`, default 30d; `key_max_age`, e.g. 365d).
pub async fn report(e: &AttestEngine, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let within = duration(req, "expiring_within")?.unwrap_or(30 * 86_400);
    let max_age = duration(req, "key_max_age")?;
    let t = now();
    let mut findings: Vec<Finding> = Vec::new();
    for s in &e.posture {
        findings.extend(s.findings(within, max_age, t).await?);
    }
    let f = |rule: &str, object: String, detail: String| Finding {
        rule: rule.into(),
        object,
        detail,
    };
    let mount = ctx.mount.path.clone();
    let (never, expiring, failing) = e
        .with_fleet(ctx.mount, &ctx.view, |fl| {
            let never: Vec<String> = fl
                .iter()
                .filter(|d| !d.pending && d.verdict.is_none())
                .map(|d| d.id.clone())
                .collect();
            let expiring: Vec<(String, i64)> = fl
                .iter()
                .filter_map(|d| {
                    d.cert_not_after
                        .filter(|x| *x <= t + within)
                        .map(|x| (d.id.clone(), x))
                })
                .collect();
            let failing: Vec<String> = fl
                .iter()
                .filter(|d| d.verdict == Some(false))
                .map(|d| d.id.clone())
                .collect();
            (never, expiring, failing)
        })
        .await?;
    for id in never {
        findings.push(f(
            "device.never_attested",
            format!("{mount} device {id}"),
            "enrolled, never attested".into(),
        ));
    }
    for (id, x) in expiring {
        findings.push(f(
            "device.cert_expiring",
            format!("{mount} device {id}"),
            format!(
                "a certificate bound to it expires {}",
                crate::core::rfc3339(x)
            ),
        ));
    }
    // Suppliers and builders whose images the failing devices measured.
    let mut by: BTreeMap<(String, String), (usize, Vec<String>)> = BTreeMap::new();
    for id in failing {
        let Some(r) = super::find(&ctx.view, &id).await? else {
            continue;
        };
        let Record {
            verdict: Some(v), ..
        } = r
        else {
            continue;
        };
        let rules: Vec<String> = v["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|x| x.starts_with("measurement."))
            .map(str::to_string)
            .collect();
        if rules.is_empty() {
            continue;
        }
        for m in v["firmware"].as_array().into_iter().flatten() {
            for (kind, k) in [("supplier", "supplier"), ("builder", "builder")] {
                if let Some(name) = m[k].as_str() {
                    let e = by.entry((kind.into(), name.into())).or_default();
                    e.0 += 1;
                    for x in &rules {
                        if !e.1.contains(x) {
                            e.1.push(x.clone());
                        }
                    }
                }
            }
        }
    }
    for ((kind, name), (n, rules)) in by {
        findings.push(f(
            &format!("{kind}.failed_attestation"),
            format!("{kind} {name}"),
            format!(
                "{n} device(s) measuring its images attested UNTRUSTED ({})",
                rules.join(", ")
            ),
        ));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for x in &findings {
        *counts.entry(x.rule.as_str()).or_default() += 1;
    }
    Ok(Response::data(json!({
        "generated_at": crate::core::rfc3339(t),
        "expiring_within_days": within / 86_400,
        "counts": counts,
        "findings": findings,
    })))
}
