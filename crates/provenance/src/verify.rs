//! Verify before install: image digests + bundle + policy + device state → ACCEPT or DENY,
//! with every failed rule named. Only signed, pinned content is ever read: a statement whose
//! envelope does not verify is not parsed.

use crate::bundle::Bundle;
use crate::dsse::{Envelope, INTOTO_PAYLOAD_TYPE};
use crate::keys::PublicKey;
use crate::policy::{DeviceState, Policy, Supplier};
use crate::statement::{self, Firmware, Statement};
use serde::Serialize;
use std::collections::BTreeMap;

/// Clock skew tolerated for a signing time in the future.
const SKEW: i64 = 300;

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The rule's name (stable; tests and operators match on it).
    pub rule: &'static str,
    /// Why it failed.
    pub detail: String,
}

/// What was established about the image (for output and the device state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The supplier whose trust root verified the signatures.
    pub supplier: Option<String>,
    /// Key IDs that signed (key mode).
    pub signer_keys: Vec<String>,
    /// The keyless certificate's identity (SAN URI) and serial (hex).
    pub signer_identity: Option<String>,
    /// Keyless certificate serial, hex.
    pub signer_serial: Option<String>,
    /// Keyless: the certificate's login-identity extensions (Fulcio names), as the CA recorded
    /// them from the signer's login.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub signer_extensions: BTreeMap<String, String>,
    /// SLSA builder ID.
    pub builder_id: Option<String>,
    /// Device class of the image.
    pub device_class: Option<String>,
    /// Version string.
    pub version: Option<String>,
    /// Security version.
    pub security_version: Option<u64>,
    /// The signing time used, and where it came from (`signer` or `tlog`).
    pub signed_at: Option<String>,
    /// Source of `signed_at`.
    pub time_source: Option<&'static str>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// ACCEPT (true) or DENY.
    pub accept: bool,
    /// Every failed rule (empty when accepted).
    pub failures: Vec<Failure>,
    /// What was established.
    pub facts: Facts,
}

/// Everything the decision needs; gathering it (hashing, reading files) is the caller's I/O.
pub struct Evidence<'a> {
    /// The image's digests, computed by the caller while streaming it.
    pub image: &'a BTreeMap<String, String>,
    /// The bundle.
    pub bundle: &'a Bundle,
    /// The policy.
    pub policy: &'a Policy,
    /// The device (absent: no anti-rollback or class check against a device).
    pub state: Option<&'a DeviceState>,
    /// CRLs (DER) of keyless signing CAs.
    pub crls: &'a [Vec<u8>],
    /// OCSP responses (DER) about keyless signing certificates, fetched or stapled.
    pub ocsp: &'a [Vec<u8>],
    /// Now, unix seconds.
    pub now: i64,
    /// Install below the installed security version, down to the policy's emergency floor.
    pub emergency: bool,
}

struct Out {
    failures: Vec<Failure>,
    facts: Facts,
}

impl Out {
    fn fail(&mut self, rule: &'static str, detail: impl Into<String>) {
        self.failures.push(Failure {
            rule,
            detail: detail.into(),
        });
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

fn pem_blocks(items: &[String], label: &str) -> Result<Vec<Vec<u8>>, String> {
    items
        .iter()
        .map(|p| {
            x509_parser::pem::parse_x509_pem(p.as_bytes())
                .map_err(|e| format!("not PEM: {e}"))
                .and_then(|(_, b)| {
                    if b.label == label {
                        Ok(b.contents)
                    } else {
                        Err(format!("a {} block where {label} was expected", b.label))
                    }
                })
        })
        .collect()
}

/// Decides. Never panics on hostile input; every problem becomes a named failure.
pub fn evaluate(ev: &Evidence) -> Verdict {
    let mut o = Out {
        failures: Vec::new(),
        facts: Facts::default(),
    };
    let b = ev.bundle;
    let vm = &b.verification_material;
    // The signing time: the transparency log's integrated time when the policy names the log
    // and the bundle carries a valid receipt for these envelopes; the signer's claim otherwise.
    let (signed_at, source) = match logged_time(ev, &mut o) {
        Some(t) => (t, "tlog"),
        None => (
            statement::rfc3339(&b.signed_at).unwrap_or(i64::MAX),
            "signer",
        ),
    };
    o.facts.signed_at = Some(statement::to_rfc3339(signed_at));
    o.facts.time_source = Some(source);
    if signed_at > ev.now + SKEW {
        o.fail("signature.time", "the signing time is in the future");
    }
    // 1. Signatures and who made them; `trusted` are the envelopes whose payloads may be read.
    let trusted: Vec<&Envelope> = match (vm.public_keys.is_empty(), vm.certificate_chain.is_empty())
    {
        (false, true) => keyed(ev, &mut o),
        (true, false) => keyless(ev, signed_at, &mut o),
        _ => {
            o.fail(
                "bundle.signer",
                "the bundle must carry either public keys or a certificate chain",
            );
            Vec::new()
        }
    };
    if trusted.len() == b.dsse_envelopes.len() {
        content(ev, &trusted, signed_at, &mut o);
    } else if o.failures.is_empty() {
        o.fail(
            "signature.valid",
            "not every envelope is signed by a trusted signer",
        );
    }
    Verdict {
        accept: o.failures.is_empty(),
        failures: o.failures,
        facts: o.facts,
    }
}

/// The integrated time of a receipt that proves these envelopes were logged as a firmware
/// signing event: the log's signature on the checkpoint, the witness threshold, the inclusion
/// proof, and the entry's envelope digests. Failures are `tlog.inclusion`.
fn logged_time(ev: &Evidence, o: &mut Out) -> Option<i64> {
    use custos_tlog::entry::Event;
    use custos_tlog::receipt::Receipt;
    let tp = ev.policy.tlog.as_ref()?;
    let trust = match tp.trust() {
        Ok(t) => t,
        Err(e) => {
            o.fail("tlog.inclusion", e.to_string());
            return None;
        }
    };
    let b = ev.bundle;
    if b.tlog_entries.is_empty() {
        if tp.required {
            o.fail(
                "tlog.inclusion",
                "the bundle carries no transparency-log receipt",
            );
        }
        return None;
    }
    let want: Vec<(String, String)> = b
        .dsse_envelopes
        .iter()
        .map(|e| {
            let digest = crate::dsse::decode_b64(&e.payload)
                .map(|p| sha256_hex(&p))
                .unwrap_or_default();
            (e.payload_type.clone(), digest)
        })
        .collect();
    let mut why = Vec::new();
    for (i, v) in b.tlog_entries.iter().enumerate() {
        let checked = Receipt::parse(v).and_then(|r| r.verify(&trust));
        let verified = match checked {
            Ok(x) => x,
            Err(e) => {
                why.push(format!("receipt {i}: {e}"));
                continue;
            }
        };
        let Event::FirmwareSigned { envelopes, .. } = &verified.entry.event else {
            why.push(format!(
                "receipt {i}: the entry is a {} event, not fw.sign",
                verified.entry.event.kind()
            ));
            continue;
        };
        let got: Vec<(String, String)> = envelopes
            .iter()
            .map(|e| (e.payload_type.clone(), e.payload_sha256.clone()))
            .collect();
        if got != want {
            why.push(format!(
                "receipt {i}: the logged envelope digests are not this bundle's"
            ));
            continue;
        }
        let t = i64::try_from(verified.entry.time).unwrap_or(i64::MAX);
        if verified
            .witness_times
            .first()
            .is_some_and(|w| t > i64::try_from(*w).unwrap_or(i64::MAX) + SKEW)
        {
            why.push(format!(
                "receipt {i}: the log's time is after a witness cosigned the checkpoint"
            ));
            continue;
        }
        return Some(t);
    }
    o.fail("tlog.inclusion", why.join("; "));
    None
}

/// Signatures by pinned keys. Returns the envelopes that passed.
fn keyed<'a>(ev: &Evidence<'a>, o: &mut Out) -> Vec<&'a Envelope> {
    let p = ev.policy;
    let blocks = match pem_blocks(&ev.bundle.verification_material.public_keys, "PUBLIC KEY") {
        Ok(b) => b,
        Err(e) => {
            o.fail("bundle.signer", format!("publicKeys: {e}"));
            return Vec::new();
        }
    };
    let mut keys: Vec<PublicKey> = Vec::new();
    for der in blocks {
        match PublicKey::from_spki_der(&der) {
            Ok(k) if !keys.contains(&k) => keys.push(k),
            Ok(_) => {}
            Err(e) => {
                o.fail("bundle.signer", format!("publicKeys: {e}"));
                return Vec::new();
            }
        }
    }
    let pinned_by = |id: &str| -> Option<&Supplier> {
        p.suppliers.iter().find(|s| s.keys.iter().any(|k| k == id))
    };
    let revoked = |id: &str| p.revocation.revoked_keys.iter().any(|k| k == id);
    let pinned: Vec<PublicKey> = keys
        .iter()
        .filter(|k| pinned_by(&k.key_id()).is_some() && !revoked(&k.key_id()))
        .cloned()
        .collect();
    let revoked_keys: Vec<PublicKey> = keys
        .iter()
        .filter(|k| revoked(&k.key_id()))
        .cloned()
        .collect();
    let mut ok = Vec::new();
    for (i, env) in ev.bundle.dsse_envelopes.iter().enumerate() {
        if env.verify(&keys, 1).is_err() {
            o.fail(
                "signature.valid",
                format!("envelope {i}: no signature verifies with the bundle's keys"),
            );
            continue;
        }
        let by_revoked = env.verify(&revoked_keys, 1).ok();
        if let Some(v) = &by_revoked {
            o.fail(
                "signer.revoked",
                format!(
                    "envelope {i}: signed by revoked key {}",
                    v.key_ids.join(", ")
                ),
            );
        }
        match env.verify(&pinned, p.verify.threshold) {
            Ok(v) => {
                for id in v.key_ids {
                    if !o.facts.signer_keys.contains(&id) {
                        o.facts.signer_keys.push(id);
                    }
                }
                ok.push(env);
            }
            // Signed only by revoked keys: that is the failure, already named.
            Err(crate::dsse::DsseError::Threshold { valid: 0, .. }) if by_revoked.is_some() => {}
            Err(crate::dsse::DsseError::Threshold { valid: 0, .. }) => o.fail(
                "signer.pinned",
                format!(
                    "envelope {i}: signed only by keys no supplier pins ({})",
                    keys.iter()
                        .map(|k| k.key_id())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Err(e) => o.fail("signature.threshold", format!("envelope {i}: {e}")),
        }
    }
    let suppliers: Vec<&str> = o
        .facts
        .signer_keys
        .iter()
        .filter_map(|id| pinned_by(id).map(|s| s.name.as_str()))
        .collect();
    if let Some(first) = suppliers.first() {
        if suppliers.iter().any(|s| s != first) {
            o.fail(
                "signer.pinned",
                "the signing keys belong to different suppliers",
            );
        }
        o.facts.supplier = Some(first.to_string());
    }
    ok
}

/// Signatures by a short-lived certificate from a pinned CA.
fn keyless<'a>(ev: &Evidence<'a>, signed_at: i64, o: &mut Out) -> Vec<&'a Envelope> {
    let p = ev.policy;
    let chain = match pem_blocks(
        &ev.bundle.verification_material.certificate_chain,
        "CERTIFICATE",
    ) {
        Ok(c) if c.len() >= 2 => c,
        Ok(_) => {
            o.fail(
                "bundle.signer",
                "certificateChain must hold the signing certificate and its issuing CA",
            );
            return Vec::new();
        }
        Err(e) => {
            o.fail("bundle.signer", format!("certificateChain: {e}"));
            return Vec::new();
        }
    };
    let (leaf_der, ca_der) = (&chain[0], &chain[1]);
    let (Ok((_, leaf)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(leaf_der),
        x509_parser::parse_x509_certificate(ca_der),
    ) else {
        o.fail("bundle.signer", "certificateChain: not X.509 certificates");
        return Vec::new();
    };
    let key = match PublicKey::from_certificate_der(leaf_der) {
        Ok(k) => k,
        Err(e) => {
            o.fail("bundle.signer", format!("signing certificate: {e}"));
            return Vec::new();
        }
    };
    let uris: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    o.facts.signer_identity = uris.first().cloned();
    o.facts.signer_extensions = leaf
        .extensions()
        .iter()
        .filter_map(|e| {
            let key = custos_pki::identity::key_of(&e.oid.to_id_string())?;
            Some((key.to_string(), custos_pki::identity::parse_value(e.value)?))
        })
        .collect();
    o.facts.signer_serial = Some(hex::encode(leaf.raw_serial()));
    let ca_fp = sha256_hex(ca_der);
    let supplier = p
        .suppliers
        .iter()
        .find(|s| s.ca_certificates.iter().any(|c| c == &ca_fp));
    let mut chain_ok = true;
    match supplier {
        None => {
            o.fail(
                "signer.pinned",
                format!("the issuing CA {ca_fp} is pinned by no supplier"),
            );
            chain_ok = false;
        }
        Some(s) => {
            o.facts.supplier = Some(s.name.clone());
            let ext = &o.facts.signer_extensions;
            if !s.identities.is_empty() && !s.identities.iter().any(|i| i.matches(&uris, ext)) {
                o.fail(
                    "certificate.identity",
                    format!(
                        "signing identity {uris:?} is not allowed for supplier {}",
                        s.name
                    ),
                );
            }
        }
    }
    if leaf.verify_signature(Some(ca.public_key())).is_err() {
        o.fail(
            "certificate.chain",
            "the signing certificate is not signed by the CA in the bundle",
        );
        chain_ok = false;
    }
    let code_signing = leaf
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.code_signing);
    if !code_signing {
        o.fail(
            "certificate.chain",
            "the signing certificate lacks the codeSigning extended key usage",
        );
        chain_ok = false;
    }
    let (nb, na) = (
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );
    if signed_at < nb || signed_at > na {
        o.fail(
            "certificate.validity",
            format!(
                "signed at {} but the certificate is valid {} to {}",
                statement::to_rfc3339(signed_at),
                statement::to_rfc3339(nb),
                statement::to_rfc3339(na)
            ),
        );
    }
    // Revocation: CRLs signed by this CA.
    let mut have_crl = false;
    for der in ev.crls {
        let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
            continue;
        };
        if crl.verify_signature(ca.public_key()).is_err() {
            continue;
        }
        have_crl = true;
        if crl
            .iter_revoked_certificates()
            .any(|r| r.raw_serial() == leaf.raw_serial())
        {
            o.fail(
                "signer.revoked",
                format!(
                    "the signing certificate {} is revoked",
                    hex::encode(leaf.raw_serial())
                ),
            );
        }
    }
    if !have_crl && p.revocation.require_crl {
        o.fail(
            "revocation.unavailable",
            "no CRL signed by the issuing CA was provided",
        );
    }
    // Revocation: OCSP answers from the CA or its delegated responder. Unusable responses
    // (forged, stale, about another certificate) are not evidence either way.
    let mut have_ocsp = false;
    let mut unusable = Vec::new();
    for der in ev.ocsp {
        match custos_pki::ocsp::check_response(der, leaf_der, ca_der, ev.now) {
            Ok(c) => match c.status {
                custos_pki::ocsp::CertStatus::Good => have_ocsp = true,
                custos_pki::ocsp::CertStatus::Revoked(at) => {
                    have_ocsp = true;
                    o.fail(
                        "signer.revoked",
                        format!(
                            "OCSP: the signing certificate {} was revoked at {}",
                            hex::encode(leaf.raw_serial()),
                            statement::to_rfc3339(at)
                        ),
                    );
                }
                custos_pki::ocsp::CertStatus::Unknown => {
                    unusable.push("the responder does not know the certificate".to_string())
                }
            },
            Err(e) => unusable.push(e.to_string()),
        }
    }
    if !have_ocsp && p.revocation.require_ocsp {
        o.fail(
            "revocation.unavailable",
            if unusable.is_empty() {
                "no OCSP response about the signing certificate was available".to_string()
            } else {
                format!("no usable OCSP response: {}", unusable.join("; "))
            },
        );
    }
    let mut ok = Vec::new();
    for (i, env) in ev.bundle.dsse_envelopes.iter().enumerate() {
        if env.verify(std::slice::from_ref(&key), 1).is_err() {
            o.fail(
                "signature.valid",
                format!("envelope {i}: the signature does not verify with the signing certificate"),
            );
        } else if chain_ok {
            ok.push(env);
        }
    }
    ok
}

/// The statements: subjects, predicates, class, supplier, builder, versions, times.
fn content(ev: &Evidence, envs: &[&Envelope], signed_at: i64, o: &mut Out) {
    let p = ev.policy;
    let mut statements: Vec<Statement> = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        if env.payload_type != INTOTO_PAYLOAD_TYPE {
            o.fail(
                "payload.type",
                format!(
                    "envelope {i}: payloadType {:?} is not {INTOTO_PAYLOAD_TYPE}",
                    env.payload_type
                ),
            );
            continue;
        }
        let Some(payload) = crate::dsse::decode_b64(&env.payload) else {
            continue;
        };
        match Statement::parse(&payload) {
            Ok(s) => {
                if !s.covers(ev.image, &p.verify.digests) {
                    o.fail(
                        "subject.digest",
                        format!(
                            "envelope {i} ({}): no subject matches the image's {}",
                            s.predicate_type,
                            p.verify.digests.join("+")
                        ),
                    );
                } else {
                    statements.push(s);
                }
            }
            Err(e) => o.fail("statement.format", format!("envelope {i}: {e}")),
        }
    }
    let find = |t: &str| statements.iter().find(|s| s.predicate_type == t);
    for t in &p.verify.required_predicates {
        if find(t).is_none() {
            o.fail(
                "predicate.required",
                format!("no signed statement about this image has predicate {t}"),
            );
        }
    }
    let slsa = find(statement::SLSA_PROVENANCE_V1).map(|s| statement::slsa_facts(&s.predicate));
    let fw = find(statement::FIRMWARE_V1).map(|s| Firmware::parse(&s.predicate));
    let slsa = match slsa {
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            o.fail("predicate.format", format!("SLSA provenance: {e}"));
            None
        }
        None => None,
    };
    let fw = match fw {
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            o.fail("predicate.format", format!("firmware: {e}"));
            None
        }
        None => None,
    };
    if let Some(s) = &slsa {
        // The login identity recorded by the CA outranks what the builder wrote.
        let ext = o.facts.signer_extensions.clone();
        for (key, claimed) in [
            ("source_repository_uri", &s.source_repo),
            ("source_repository_digest", &s.commit),
        ] {
            if let Some(v) = ext.get(key) {
                if claimed.as_deref() != Some(v.as_str()) {
                    o.fail(
                        "source.identity",
                        format!(
                            "the provenance claims {key} {claimed:?} but the signing \
                             certificate records {v:?}"
                        ),
                    );
                }
            }
        }
        o.facts.builder_id = Some(s.builder_id.clone());
        if let Some(id) = o.facts.signer_identity.clone() {
            if id != s.builder_id {
                o.fail(
                    "builder.identity",
                    format!(
                        "the provenance names builder {} but the certificate was issued to {id}",
                        s.builder_id
                    ),
                );
            }
        }
    }
    let Some(fw) = fw else {
        return;
    };
    o.facts.device_class = Some(fw.device_class.clone());
    o.facts.version = Some(fw.version.clone());
    o.facts.security_version = Some(fw.security_version);
    if let Some(st) = ev.state {
        if st.device_class != fw.device_class {
            o.fail(
                "device_class.match",
                format!(
                    "the image is for {:?}, this device is {:?}",
                    fw.device_class, st.device_class
                ),
            );
        }
        if let Some(h) = &st.hardware_id {
            if !fw.hardware_ids.is_empty() && !fw.hardware_ids.contains(h) {
                o.fail(
                    "hardware.match",
                    format!("the image does not list hardware ID {h:?}"),
                );
            }
        }
    }
    let Some(class) = p.class(&fw.device_class) else {
        o.fail(
            "device_class.known",
            format!("the policy has no device class {:?}", fw.device_class),
        );
        return;
    };
    if let Some(sup) = o.facts.supplier.clone() {
        if !class.suppliers.contains(&sup) {
            o.fail(
                "supplier.allowed",
                format!("supplier {sup} may not ship images for {}", class.name),
            );
        }
        if fw.vendor != sup {
            o.fail(
                "supplier.vendor",
                format!(
                    "the image claims vendor {:?} but was signed by supplier {sup}",
                    fw.vendor
                ),
            );
        }
    }
    if let Some(s) = &slsa {
        if !class.builders.contains(&s.builder_id) {
            o.fail(
                "builder.allowed",
                format!("builder {} may not build for {}", s.builder_id, class.name),
            );
        }
    }
    if fw.security_version < class.min_security_version {
        o.fail(
            "security_version.minimum",
            format!(
                "security version {} is below the policy minimum {}",
                fw.security_version, class.min_security_version
            ),
        );
    }
    if let Some(st) = ev.state {
        let floor = st.floor();
        if fw.security_version < floor {
            let emergency_ok = ev.emergency
                && class
                    .emergency_floor
                    .is_some_and(|f| fw.security_version >= f);
            if !emergency_ok {
                o.fail(
                    "anti_rollback",
                    format!(
                        "security version {} is below the device's {floor}",
                        fw.security_version
                    ),
                );
            }
        }
    }
    if ev.now > fw.not_after_unix() {
        o.fail(
            "image.expired",
            format!("the image's notAfter {} has passed", fw.not_after),
        );
    }
    if let Some(max) = p.max_age() {
        if ev.now.saturating_sub(signed_at) > max {
            o.fail(
                "signature.age",
                format!(
                    "signed {} s ago; the policy allows {max} s",
                    ev.now.saturating_sub(signed_at)
                ),
            );
        }
    }
}
