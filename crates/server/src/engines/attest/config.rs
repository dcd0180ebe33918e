//! `<mount>/config`: the manufacturer CAs EK certificates must chain to, the attestation
//! policy, the firmware policy that decides which measured images are trusted, where their
//! provenance lives, the PKI mount of devices' certificates (quarantine revokes them there),
//! and the nonce lifetime.

use crate::error::{ApiError, ApiResult};
use custos_attest::policy::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Largest PEM bundle or policy text accepted.
const MAX_TEXT: usize = 256 << 10;

/// The stored configuration (the texts as written; parsed on use).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    /// PEM certificates: self-signed ones are roots, the others intermediates.
    pub manufacturer_ca_pem: String,
    /// The attestation policy (TOML, `custos_attest::policy`).
    pub policy: String,
    /// The firmware policy (TOML, as `custos fw verify --policy`).
    pub firmware_policy: String,
    /// The provenance mount holding signed bundles (with a trailing `/`).
    pub provenance_mount: String,
    /// A PKI mount whose CRL judges keyless signing certificates (with a trailing `/`), or
    /// empty.
    #[serde(default)]
    pub revocation_pki_mount: String,
    /// The PKI mount that issues devices' certificates (with a trailing `/`): a quarantine
    /// revokes the device's certificates there. Empty: no certificate is revoked.
    #[serde(default)]
    pub device_pki_mount: String,
    /// The orchestrator's webhook (empty: none).
    #[serde(default)]
    pub webhook_url: String,
    /// The webhook's HMAC key (never read back).
    #[serde(default)]
    pub webhook_secret: String,
    /// Seconds a nonce stays valid.
    pub nonce_ttl: u64,
}

/// The configuration, parsed.
pub struct Parsed {
    /// As stored.
    pub stored: Stored,
    /// Manufacturer roots (DER).
    pub roots: Vec<Vec<u8>>,
    /// Manufacturer intermediates (DER).
    pub intermediates: Vec<Vec<u8>>,
    /// The attestation policy.
    pub policy: Policy,
    /// The firmware policy, judging images by their SHA-256 alone (that is what a TPM
    /// measures).
    pub firmware: custos_provenance::policy::Policy,
    /// Which load or write of the configuration this is (reference decisions are cached per
    /// generation).
    pub generation: u64,
}

fn text(data: &Map<String, Value>, k: &str) -> ApiResult<Option<String>> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::bad(format!("{k}: larger than {MAX_TEXT} bytes"))),
        Some(_) => Err(ApiError::bad(format!("{k}: must be a string"))),
    }
}

fn mount_path(s: &str) -> String {
    let t = s.trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}/")
    }
}

impl Parsed {
    /// Parses and checks a stored configuration.
    pub fn parse(stored: Stored) -> ApiResult<Parsed> {
        let certs = custos_attest::ek::pem_certificates(&stored.manufacturer_ca_pem);
        if certs.is_empty() {
            return Err(ApiError::bad(
                "manufacturer_ca_pem: no PEM CERTIFICATE found (the TPM manufacturer's EK CA certificates)",
            ));
        }
        let mut roots = Vec::new();
        let mut intermediates = Vec::new();
        for (i, der) in certs.into_iter().enumerate() {
            let self_signed = x509_parser::parse_x509_certificate(&der)
                .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
                .map_err(|e| ApiError::bad(format!("manufacturer_ca_pem: certificate {i}: {e}")))?;
            if self_signed {
                roots.push(der);
            } else {
                intermediates.push(der);
            }
        }
        if roots.is_empty() {
            return Err(ApiError::bad(
                "manufacturer_ca_pem: no self-signed root among the certificates",
            ));
        }
        let policy =
            Policy::parse(&stored.policy).map_err(|e| ApiError::bad(format!("policy: {e}")))?;
        let firmware = custos_attest::references::for_measurements(
            custos_provenance::policy::Policy::parse(&stored.firmware_policy)
                .map_err(|e| ApiError::bad(format!("firmware_policy: {e}")))?,
        );
        Ok(Parsed {
            stored,
            roots,
            intermediates,
            policy,
            firmware,
            generation: 0,
        })
    }

    /// A write of `config`: the fields given replace the stored ones.
    pub fn update(old: Option<Stored>, data: &Map<String, Value>) -> ApiResult<Parsed> {
        for k in data.keys() {
            if ![
                "manufacturer_ca_pem",
                "policy",
                "firmware_policy",
                "provenance_mount",
                "revocation_pki_mount",
                "device_pki_mount",
                "webhook_url",
                "webhook_secret",
                "nonce_ttl",
            ]
            .contains(&k.as_str())
            {
                return Err(ApiError::bad(format!("{k}: unknown setting")));
            }
        }
        let req = |k: &str, old: Option<String>| -> ApiResult<String> {
            text(data, k)?
                .or(old)
                .ok_or_else(|| ApiError::bad(format!("{k}: required")))
        };
        let o = old.as_ref();
        let nonce_ttl = match data.get("nonce_ttl") {
            None => o.map_or(60, |o| o.nonce_ttl),
            Some(v) => {
                let s = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                crate::core::duration::parse_duration(&s)
                    .ok()
                    .filter(|n| (5..=3600).contains(n))
                    .ok_or_else(|| ApiError::bad("nonce_ttl: a duration from 5s to 1h"))?
            }
        };
        let stored = Stored {
            manufacturer_ca_pem: req(
                "manufacturer_ca_pem",
                o.map(|o| o.manufacturer_ca_pem.clone()),
            )?,
            policy: req("policy", o.map(|o| o.policy.clone()))?,
            firmware_policy: req("firmware_policy", o.map(|o| o.firmware_policy.clone()))?,
            provenance_mount: mount_path(&req(
                "provenance_mount",
                o.map(|o| o.provenance_mount.clone()),
            )?),
            revocation_pki_mount: mount_path(
                &text(data, "revocation_pki_mount")?
                    .or(o.map(|o| o.revocation_pki_mount.clone()))
                    .unwrap_or_default(),
            ),
            device_pki_mount: mount_path(
                &text(data, "device_pki_mount")?
                    .or(o.map(|o| o.device_pki_mount.clone()))
                    .unwrap_or_default(),
            ),
            webhook_url: text(data, "webhook_url")?
                .or(o.map(|o| o.webhook_url.clone()))
                .unwrap_or_default(),
            webhook_secret: text(data, "webhook_secret")?
                .or(o.map(|o| o.webhook_secret.clone()))
                .unwrap_or_default(),
            nonce_ttl,
        };
        if !stored.webhook_url.is_empty() {
            let u = reqwest::Url::parse(&stored.webhook_url)
                .map_err(|e| ApiError::bad(format!("webhook_url: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(ApiError::bad("webhook_url: http or https"));
            }
            if stored.webhook_secret.len() < 16 {
                return Err(ApiError::bad(
                    "webhook_secret: at least 16 characters (the receiver checks the HMAC)",
                ));
            }
        }
        Parsed::parse(stored)
    }

    /// The read answer.
    pub fn to_json(&self) -> Value {
        let s = &self.stored;
        json!({
            "manufacturer_ca_pem": s.manufacturer_ca_pem,
            "manufacturer_roots": self.roots.len(),
            "manufacturer_intermediates": self.intermediates.len(),
            "policy": s.policy,
            "device_classes": self.policy.classes.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "firmware_policy": s.firmware_policy,
            "provenance_mount": s.provenance_mount,
            "revocation_pki_mount": s.revocation_pki_mount,
            "device_pki_mount": s.device_pki_mount,
            "webhook_url": s.webhook_url,
            "webhook_secret_set": !s.webhook_secret.is_empty(),
            "nonce_ttl": s.nonce_ttl,
        })
    }
}
