//! The PKI's part of the posture report: certificates expiring soon, and weak keys or
//! signature algorithms in CA certificates, roles and the certificates about to expire.

use super::*;
use crate::core::services::{Finding, PostureSource};

/// Certificates examined per mount (the expiry index is read in order of expiry).
const MAX_EXPIRING: usize = 10_000;

/// Why a certificate's key or signature is weak, if it is: RSA under 2048 bits, P-192, SHA-1.
pub(super) fn weakness(der: &[u8]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let Ok((_, x)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    let sig = x.signature_algorithm.algorithm.to_id_string();
    if matches!(
        sig.as_str(),
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" | "1.3.14.3.2.29"
    ) {
        out.push(("weak_signature", format!("signed with SHA-1 ({sig})")));
    }
    match x.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(k)) if k.key_size() < 2048 => {
            out.push(("weak_key", format!("RSA-{} (< 2048 bits)", k.key_size())));
        }
        Ok(x509_parser::public_key::PublicKey::EC(_)) => {
            let curve = x
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            if curve == "1.2.840.10045.3.1.1" {
                out.push(("weak_key", "P-192".to_string()));
            }
        }
        _ => {}
    }
    out
}

async fn mount_findings(
    a: &View,
    m: &MountEntry,
    within: i64,
    now: i64,
) -> ApiResult<Vec<Finding>> {
    let mut out = Vec::new();
    let f = |rule: &str, object: String, detail: String| Finding {
        rule: rule.to_string(),
        object,
        detail,
    };
    for id in a.list("issuer/").await? {
        let Some(e) = a.get_json::<IssuerEntry>(&format!("issuer/{id}")).await? else {
            continue;
        };
        let obj = format!("{} issuer {} ({})", m.path, e.issuer_id, e.issuer_name);
        if let Ok(der) = pem_to_der(&e.certificate) {
            for (rule, why) in weakness(&der) {
                out.push(f(&format!("ca.{rule}"), obj.clone(), why));
            }
        }
        if !e.revoked && e.not_after <= now + within {
            out.push(f(
                "ca.expiring",
                obj,
                format!("expires {}", crate::core::rfc3339(e.not_after)),
            ));
        }
    }
    for name in a.list("role/").await? {
        let Some(raw) = a.get_json::<Value>(&format!("role/{name}")).await? else {
            continue;
        };
        let kt = raw.get("key_type").and_then(Value::as_str).unwrap_or("");
        let bits = raw.get("key_bits").and_then(Value::as_u64).unwrap_or(0);
        if kt == "rsa" && bits > 0 && bits < 2048 {
            out.push(f(
                "role.weak_key",
                format!("{} role {name}", m.path),
                format!("issues RSA-{bits} keys (< 2048 bits)"),
            ));
        }
    }
    for row in a.certs_expiring_before(now + within, MAX_EXPIRING).await? {
        if row.revoked_at.is_some() || row.not_after < now {
            continue;
        }
        let obj = format!("{} cert {}", m.path, row.serial);
        out.push(f(
            "cert.expiring",
            obj.clone(),
            format!("expires {}", crate::core::rfc3339(row.not_after)),
        ));
        for (rule, why) in weakness(&row.value) {
            out.push(f(&format!("cert.{rule}"), obj.clone(), why));
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl PostureSource for Pki {
    async fn findings(
        &self,
        expiring_within: i64,
        _key_max_age: Option<i64>,
        now: i64,
    ) -> ApiResult<Vec<Finding>> {
        let sys = self.sys()?;
        let mut out = Vec::new();
        for m in sys.mounts().await? {
            out.extend(mount_findings(&sys.view(&m)?, &m, expiring_within, now).await?);
        }
        Ok(out)
    }
}
