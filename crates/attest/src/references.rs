//! Reference values from signed provenance: a measured image is trusted for a device class
//! when one of its bundles passes the firmware policy (the `custos fw verify` decision) for
//! that class. A TPM measures SHA-256, so the image is known by that digest alone.

use crate::verify::{Denied, ReferenceImage};
use custos_provenance::bundle::Bundle;
use custos_provenance::policy::{DeviceState, Policy};
use custos_provenance::verify::{evaluate, Evidence};
use std::collections::BTreeMap;

/// The firmware policy as attestation applies it: the only digest checked is SHA-256.
pub fn for_measurements(mut policy: Policy) -> Policy {
    policy.verify.digests = vec!["sha256".into()];
    policy
}

/// Appraises the bundles of the image whose SHA-256 is `sha256_hex` for `class`: the first
/// bundle that passes, else the first refusal (with every failed rule, and whether a
/// signer is revoked); `None` without bundles.
pub fn appraise_bundles(
    sha256_hex: &str,
    bundles: &[Bundle],
    policy: &Policy,
    class: &str,
    crls: &[Vec<u8>],
    now: i64,
) -> Option<ReferenceImage> {
    let image = BTreeMap::from([("sha256".to_string(), sha256_hex.to_string())]);
    let state = DeviceState {
        device_class: class.to_string(),
        hardware_id: None,
        installed: None,
        known_good: None,
        max_security_version: 0,
    };
    let mut first: Option<ReferenceImage> = None;
    for bundle in bundles {
        let v = evaluate(&Evidence {
            image: &image,
            bundle,
            policy,
            state: Some(&state),
            crls,
            ocsp: &[],
            now,
            emergency: false,
        });
        let r = ReferenceImage {
            version: v.facts.version.clone().unwrap_or_default(),
            security_version: v.facts.security_version.unwrap_or(0),
            signers: match &v.facts.signer_identity {
                Some(id) => vec![id.clone()],
                None => v.facts.signer_keys.clone(),
            },
            supplier: v.facts.supplier.clone(),
            builder: v.facts.builder_id.clone(),
            denied: (!v.accept).then(|| Denied {
                revoked: v.failures.iter().any(|f| f.rule == "signer.revoked"),
                reasons: v
                    .failures
                    .iter()
                    .map(|f| format!("{}: {}", f.rule, f.detail))
                    .collect(),
            }),
        };
        if r.denied.is_none() {
            return Some(r);
        }
        first.get_or_insert(r);
    }
    first
}
