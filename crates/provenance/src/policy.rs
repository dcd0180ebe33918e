//! The operator's install policy (TOML) and the device state (JSON).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a policy or state file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct PolicyError {
    /// The setting (or file) at fault.
    pub what: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(what: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        what: what.into(),
        reason: reason.into(),
    }
}

/// A supplier and the trust roots pinned for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Supplier {
    /// Name; must equal the firmware predicate's `vendor`.
    pub name: String,
    /// Pinned signing keys: hex SHA-256 of the SubjectPublicKeyInfo.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Pinned CAs for keyless signing: hex SHA-256 of the CA certificate (DER).
    #[serde(default)]
    pub ca_certificates: Vec<String>,
    /// Keyless: the signing certificate must match one of these (builder identities). An entry
    /// is a SAN URI, or a table that also pins login-identity extensions of the certificate.
    #[serde(default)]
    pub identities: Vec<Identity>,
}

/// An allowed keyless signer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Identity {
    /// The certificate's SAN URI.
    Uri(String),
    /// The SAN URI plus extension values that must match exactly.
    Pinned(PinnedIdentity),
}

/// A SAN URI with the login-identity extensions (Fulcio names: `issuer`,
/// `source_repository_uri`, `source_repository_ref`, `runner_environment`, …) it must carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedIdentity {
    /// The certificate's SAN URI.
    pub uri: String,
    /// Extension name → required value.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

impl Identity {
    /// Whether a certificate with these SAN URIs and identity extensions matches.
    pub fn matches(&self, uris: &[String], ext: &BTreeMap<String, String>) -> bool {
        match self {
            Identity::Uri(u) => uris.contains(u),
            Identity::Pinned(p) => {
                uris.contains(&p.uri)
                    && p.extensions
                        .iter()
                        .all(|(k, v)| ext.get(k).is_some_and(|x| x == v))
            }
        }
    }
}

/// What one device class accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceClass {
    /// Name; must equal the firmware predicate's `deviceClass`.
    pub name: String,
    /// Suppliers allowed to ship images for it.
    pub suppliers: Vec<String>,
    /// Builder IDs (SLSA `runDetails.builder.id`) allowed to build them.
    pub builders: Vec<String>,
    /// Lowest security version accepted at all.
    #[serde(default)]
    pub min_security_version: u64,
    /// With `--emergency`, images down to this security version may replace a newer one.
    /// Absent: rollback below the installed version is never allowed.
    #[serde(default)]
    pub emergency_floor: Option<u64>,
}

/// Signature rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRules {
    /// Distinct pinned keys that must sign each envelope.
    #[serde(default = "one")]
    pub threshold: usize,
    /// Predicate types that must be present, signed, and about this image.
    #[serde(default = "default_predicates")]
    pub required_predicates: Vec<String>,
    /// Digest algorithms that must match the image (each must be in the subject).
    #[serde(default = "default_digests")]
    pub digests: Vec<String>,
    /// Largest accepted age of the signature, e.g. "365d" (absent: no limit).
    #[serde(default)]
    pub max_signature_age: Option<String>,
}

fn one() -> usize {
    1
}

fn default_predicates() -> Vec<String> {
    vec![
        crate::statement::SLSA_PROVENANCE_V1.into(),
        crate::statement::FIRMWARE_V1.into(),
    ]
}

fn default_digests() -> Vec<String> {
    vec!["sha256".into()]
}

impl Default for VerifyRules {
    fn default() -> Self {
        VerifyRules {
            threshold: 1,
            required_predicates: default_predicates(),
            digests: default_digests(),
            max_signature_age: None,
        }
    }
}

/// Revocation inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Revoked signing keys (hex SHA-256 of the SubjectPublicKeyInfo).
    #[serde(default)]
    pub revoked_keys: Vec<String>,
    /// CRL files (DER or PEM) of the keyless signing CA(s); the CLI reads them.
    #[serde(default)]
    pub crl_files: Vec<String>,
    /// Deny keyless signatures when no CRL from the signing CA is available.
    #[serde(default)]
    pub require_crl: bool,
    /// Deny keyless signatures without a fresh OCSP answer (good or revoked) from the signing
    /// CA or its delegated responder.
    #[serde(default)]
    pub require_ocsp: bool,
    /// The CLI asks the OCSP responder named in the signing certificate (AIA) at verify time.
    #[serde(default)]
    pub fetch_ocsp: bool,
}

/// The transparency log whose receipts the bundle carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlogPolicy {
    /// The log's checkpoint key (`origin+hash+base64`, from `sys/tlog/key`).
    pub key: String,
    /// Witness cosigner keys (`name+hash+base64`, type 0x04).
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// How many distinct witnesses must have cosigned the receipt's checkpoint.
    #[serde(default)]
    pub witness_threshold: usize,
    /// Deny bundles without a valid receipt (otherwise a receipt is checked when present).
    #[serde(default)]
    pub required: bool,
}

impl TlogPolicy {
    /// The verifiers the policy names (checked by [`Policy::parse`]).
    pub fn trust(&self) -> Result<custos_tlog::receipt::Trust, PolicyError> {
        use custos_tlog::note::{Verifier, TYPE_COSIGNATURE, TYPE_ED25519};
        let log = Verifier::parse(&self.key).map_err(|e| bad("tlog.key", e.to_string()))?;
        if log.kind != TYPE_ED25519 {
            return Err(bad("tlog.key", "must be an Ed25519 note key (type 1)"));
        }
        let mut witnesses = Vec::new();
        for (i, w) in self.witnesses.iter().enumerate() {
            let v = Verifier::parse(w)
                .map_err(|e| bad(&format!("tlog.witnesses[{i}]"), e.to_string()))?;
            if v.kind != TYPE_COSIGNATURE {
                return Err(bad(
                    &format!("tlog.witnesses[{i}]"),
                    "must be an Ed25519 cosignature key (type 4)",
                ));
            }
            if witnesses.contains(&v) {
                return Err(bad(&format!("tlog.witnesses[{i}]"), "is listed twice"));
            }
            witnesses.push(v);
        }
        if self.witness_threshold > witnesses.len() {
            return Err(bad(
                "tlog.witness_threshold",
                format!("is more than the {} witnesses listed", witnesses.len()),
            ));
        }
        Ok(custos_tlog::receipt::Trust {
            log,
            witnesses,
            threshold: self.witness_threshold,
        })
    }
}

/// The install policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Suppliers and their pinned trust roots.
    #[serde(default)]
    pub suppliers: Vec<Supplier>,
    /// Device classes.
    #[serde(default)]
    pub device_classes: Vec<DeviceClass>,
    /// Signature rules.
    #[serde(default)]
    pub verify: VerifyRules,
    /// Revocation.
    #[serde(default)]
    pub revocation: Revocation,
    /// The transparency log (receipts in the bundle; the witnessed signing time).
    #[serde(default)]
    pub tlog: Option<TlogPolicy>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Policy {
    /// Parses and checks a TOML policy; every error names its setting.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| bad("policy", e.message()))?;
        if p.suppliers.is_empty() {
            return Err(bad("suppliers", "at least one supplier is required"));
        }
        for (i, s) in p.suppliers.iter().enumerate() {
            if s.name.is_empty() {
                return Err(bad(&format!("suppliers[{i}].name"), "is empty"));
            }
            if s.keys.is_empty() && s.ca_certificates.is_empty() {
                return Err(bad(
                    &format!("suppliers[{i}]"),
                    "pins no keys and no CA certificates",
                ));
            }
            for id in &s.identities {
                if let Identity::Pinned(p) = id {
                    if let Some(k) = p
                        .extensions
                        .keys()
                        .find(|k| !custos_pki::identity::EXTENSIONS.iter().any(|(n, _)| n == k))
                    {
                        return Err(bad(
                            &format!("suppliers[{i}].identities"),
                            format!("{k:?} is not a certificate identity extension"),
                        ));
                    }
                }
            }
            for k in s.keys.iter().chain(&s.ca_certificates) {
                if !is_hex64(k) {
                    return Err(bad(
                        &format!("suppliers[{i}]"),
                        format!("{k:?} is not a lower-case hex SHA-256 fingerprint"),
                    ));
                }
            }
        }
        for (i, c) in p.device_classes.iter().enumerate() {
            for s in &c.suppliers {
                if !p.suppliers.iter().any(|x| &x.name == s) {
                    return Err(bad(
                        &format!("device_classes[{i}].suppliers"),
                        format!("{s:?} is not a configured supplier"),
                    ));
                }
            }
            if c.builders.is_empty() {
                return Err(bad(&format!("device_classes[{i}].builders"), "is empty"));
            }
            if c.emergency_floor
                .is_some_and(|f| f < c.min_security_version)
            {
                return Err(bad(
                    &format!("device_classes[{i}].emergency_floor"),
                    "must not be below min_security_version",
                ));
            }
        }
        if p.device_classes.is_empty() {
            return Err(bad(
                "device_classes",
                "at least one device class is required",
            ));
        }
        if let Some(t) = &p.tlog {
            t.trust()?;
        }
        if p.verify.threshold == 0 {
            return Err(bad("verify.threshold", "must be at least 1"));
        }
        for d in &p.verify.digests {
            if d != "sha256" && d != "sha512" {
                return Err(bad(
                    "verify.digests",
                    format!("{d:?}: only sha256 and sha512"),
                ));
            }
        }
        if p.verify.digests.is_empty() {
            return Err(bad("verify.digests", "is empty"));
        }
        if let Some(a) = &p.verify.max_signature_age {
            parse_age(a)
                .ok_or_else(|| bad("verify.max_signature_age", "must be like 90d, 12h or 3600s"))?;
        }
        for k in &p.revocation.revoked_keys {
            if !is_hex64(k) {
                return Err(bad(
                    "revocation.revoked_keys",
                    format!("{k:?} is not a lower-case hex SHA-256 fingerprint"),
                ));
            }
        }
        Ok(p)
    }

    /// The device class named `name`.
    pub fn class(&self, name: &str) -> Option<&DeviceClass> {
        self.device_classes.iter().find(|c| c.name == name)
    }

    /// Largest signature age in seconds, if limited.
    pub fn max_age(&self) -> Option<i64> {
        self.verify.max_signature_age.as_deref().and_then(parse_age)
    }
}

/// "90d", "12h", "30m", "3600s" or plain seconds.
pub fn parse_age(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, mul) = match s.char_indices().last()? {
        (i, 'd') => (&s[..i], 86_400),
        (i, 'h') => (&s[..i], 3_600),
        (i, 'm') => (&s[..i], 60),
        (i, 's') => (&s[..i], 1),
        _ => (s, 1),
    };
    n.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .and_then(|v| v.checked_mul(mul))
}

/// An installed image, as the device state records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    /// Digests of the image.
    pub digest: BTreeMap<String, String>,
    /// Version string.
    pub version: String,
    /// Security version (anti-rollback counter).
    pub security_version: u64,
    /// When it was installed (RFC 3339).
    pub installed_at: String,
}

/// What a device is and runs. Written only by `custos fw install`, durably.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceState {
    /// The device class.
    pub device_class: String,
    /// The board's hardware ID, if the image must list it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_id: Option<String>,
    /// The running image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<Installed>,
    /// The last image marked known-good: the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_good: Option<Installed>,
    /// Highest security version ever installed: the anti-rollback floor survives a rollback
    /// to known-good.
    #[serde(default)]
    pub max_security_version: u64,
}

impl DeviceState {
    /// Parses a state file.
    pub fn parse(bytes: &[u8]) -> Result<DeviceState, PolicyError> {
        if bytes.len() > 1 << 20 {
            return Err(bad("state", "larger than 1 MiB"));
        }
        let s: DeviceState =
            serde_json::from_slice(bytes).map_err(|e| bad("state", e.to_string()))?;
        if s.device_class.is_empty() {
            return Err(bad("state.device_class", "is empty"));
        }
        Ok(s)
    }

    /// The security version below which nothing installs (without an emergency floor).
    pub fn floor(&self) -> u64 {
        self.installed
            .as_ref()
            .map_or(0, |i| i.security_version)
            .max(self.max_security_version)
    }
}
