//! PKI roles: Vault's field set plus `profile = "3gpp-sba"`.

use crate::fields::{bool_of, duration_of, int_of, list_of, str_of};
use crate::PkiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Three years, the longest validity TS 33.310 allows for SBA end-entity certificates.
pub const SBA_MAX_VALIDITY: u64 = 3 * 365 * 86400;

/// Key algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA (via aws-lc), 2048 bits or more.
    Rsa,
    /// ECDSA P-256 or P-384.
    Ec,
    /// Ed25519.
    Ed25519,
    /// Any key (sign only).
    Any,
}

impl KeyType {
    /// Parses Vault's key_type names.
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        match s {
            "rsa" => Ok(KeyType::Rsa),
            "ec" => Ok(KeyType::Ec),
            "ed25519" => Ok(KeyType::Ed25519),
            "any" => Ok(KeyType::Any),
            other => Err(PkiError::field(
                "key_type",
                &format!("unknown key type {other:?} (use rsa, ec, ed25519 or any)"),
            )),
        }
    }

    /// Name as Vault prints it.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ec => "ec",
            KeyType::Ed25519 => "ed25519",
            KeyType::Any => "any",
        }
    }

    /// Default and validation of key_bits.
    pub fn bits(self, bits: i64) -> Result<u32, PkiError> {
        match (self, bits) {
            (KeyType::Rsa, 0) => Ok(2048),
            (KeyType::Rsa, b) if b == 2048 || b == 3072 || b == 4096 => Ok(b as u32),
            (KeyType::Rsa, b) => Err(PkiError::field(
                "key_bits",
                &format!("RSA keys must be 2048, 3072 or 4096 bits, not {b}"),
            )),
            (KeyType::Ec, 0) => Ok(256),
            (KeyType::Ec, b) if b == 256 || b == 384 => Ok(b as u32),
            (KeyType::Ec, b) => Err(PkiError::field(
                "key_bits",
                &format!("EC keys must be 256 or 384 bits (P-256, P-384), not {b}"),
            )),
            (KeyType::Ed25519 | KeyType::Any, _) => Ok(0),
        }
    }
}

/// Certificate profiles a role can enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Profile {
    /// Vault's rules only.
    #[default]
    #[serde(rename = "")]
    None,
    /// TS 33.310 6.1.3c SBA profile.
    #[serde(rename = "3gpp-sba")]
    Sba,
}

/// A role. Field names and defaults follow Vault's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Role {
    pub allowed_domains: Vec<String>,
    pub allow_subdomains: bool,
    pub allow_bare_domains: bool,
    pub allow_glob_domains: bool,
    pub allow_any_name: bool,
    pub enforce_hostnames: bool,
    pub allow_localhost: bool,
    pub allow_wildcard_certificates: bool,
    pub allow_ip_sans: bool,
    pub allowed_uri_sans: Vec<String>,
    pub ttl: u64,
    pub max_ttl: u64,
    pub not_before_duration: u64,
    pub key_type: KeyType,
    pub key_bits: u32,
    pub server_flag: bool,
    pub client_flag: bool,
    pub code_signing_flag: bool,
    pub email_protection_flag: bool,
    pub key_usage: Vec<String>,
    pub ext_key_usage: Vec<String>,
    pub use_csr_common_name: bool,
    pub use_csr_sans: bool,
    pub require_cn: bool,
    pub no_store: bool,
    pub generate_lease: bool,
    pub issuer_ref: String,
    pub country: Vec<String>,
    pub organization: Vec<String>,
    pub ou: Vec<String>,
    pub locality: Vec<String>,
    pub province: Vec<String>,
    pub street_address: Vec<String>,
    pub postal_code: Vec<String>,
    pub profile: Profile,
    /// Custos: copy the caller's login identity into Fulcio-format extensions
    /// ([`crate::identity`]); a `build_signer_uri` in it becomes the only allowed URI SAN.
    #[serde(default)]
    pub provenance_extensions: bool,
}

/// Key usages a role may name (Vault's spelling).
pub const KEY_USAGES: &[&str] = &[
    "DigitalSignature",
    "ContentCommitment",
    "KeyEncipherment",
    "DataEncipherment",
    "KeyAgreement",
    "CertSign",
    "CRLSign",
    "EncipherOnly",
    "DecipherOnly",
];
/// Extended key usages a role may name.
pub const EXT_KEY_USAGES: &[&str] = &[
    "ServerAuth",
    "ClientAuth",
    "CodeSigning",
    "EmailProtection",
    "TimeStamping",
    "OCSPSigning",
    "Any",
];

const FIELDS: &[&str] = &[
    "allowed_domains",
    "allow_subdomains",
    "allow_bare_domains",
    "allow_glob_domains",
    "allow_any_name",
    "enforce_hostnames",
    "allow_localhost",
    "allow_wildcard_certificates",
    "allow_ip_sans",
    "allowed_uri_sans",
    "ttl",
    "max_ttl",
    "not_before_duration",
    "key_type",
    "key_bits",
    "server_flag",
    "client_flag",
    "code_signing_flag",
    "email_protection_flag",
    "key_usage",
    "ext_key_usage",
    "use_csr_common_name",
    "use_csr_sans",
    "require_cn",
    "no_store",
    "generate_lease",
    "issuer_ref",
    "country",
    "organization",
    "ou",
    "locality",
    "province",
    "street_address",
    "postal_code",
    "profile",
    "provenance_extensions",
];

fn norm_case(list: Vec<String>, allowed: &[&str], field: &str) -> Result<Vec<String>, PkiError> {
    list.into_iter()
        .map(|u| {
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(&u))
                .map(|a| a.to_string())
                .ok_or_else(|| {
                    PkiError::field(
                        field,
                        &format!("unknown value {u:?} (allowed: {})", allowed.join(", ")),
                    )
                })
        })
        .collect()
}

impl Role {
    /// Builds a role from request fields, on top of `base` (the existing role for an update,
    /// or defaults). Returns the role and warnings for fields Vault would ignore.
    pub fn from_fields(
        base: Option<&Role>,
        d: &Map<String, Value>,
    ) -> Result<(Role, Vec<String>), PkiError> {
        let b = base.cloned().unwrap_or_default();
        let has = |k: &str| d.get(k).is_some_and(|v| !v.is_null());
        let pick_bool = |k: &str, cur: bool| -> Result<bool, PkiError> {
            if has(k) {
                bool_of(d, k, cur)
            } else {
                Ok(cur)
            }
        };
        let pick_list = |k: &str, cur: &Vec<String>| -> Result<Vec<String>, PkiError> {
            if has(k) {
                list_of(d, k)
            } else {
                Ok(cur.clone())
            }
        };
        let pick_dur = |k: &str, cur: u64| -> Result<u64, PkiError> {
            if has(k) {
                duration_of(d, k)
            } else {
                Ok(cur)
            }
        };
        let key_type = if has("key_type") {
            KeyType::parse(&str_of(d, "key_type")?)?
        } else {
            b.key_type
        };
        let key_bits = if has("key_bits") || has("key_type") {
            key_type.bits(int_of(d, "key_bits", 0)?)?
        } else {
            b.key_bits
        };
        let profile = if has("profile") {
            match str_of(d, "profile")?.as_str() {
                "" | "none" => Profile::None,
                "3gpp-sba" => Profile::Sba,
                other => {
                    return Err(PkiError::field(
                        "profile",
                        &format!("unknown profile {other:?} (use \"3gpp-sba\")"),
                    ))
                }
            }
        } else {
            b.profile
        };
        let mut role = Role {
            allowed_domains: pick_list("allowed_domains", &b.allowed_domains)?,
            allow_subdomains: pick_bool("allow_subdomains", b.allow_subdomains)?,
            allow_bare_domains: pick_bool("allow_bare_domains", b.allow_bare_domains)?,
            allow_glob_domains: pick_bool("allow_glob_domains", b.allow_glob_domains)?,
            allow_any_name: pick_bool("allow_any_name", b.allow_any_name)?,
            enforce_hostnames: pick_bool("enforce_hostnames", b.enforce_hostnames)?,
            allow_localhost: pick_bool("allow_localhost", b.allow_localhost)?,
            allow_wildcard_certificates: pick_bool(
                "allow_wildcard_certificates",
                b.allow_wildcard_certificates,
            )?,
            allow_ip_sans: pick_bool("allow_ip_sans", b.allow_ip_sans)?,
            allowed_uri_sans: pick_list("allowed_uri_sans", &b.allowed_uri_sans)?,
            ttl: pick_dur("ttl", b.ttl)?,
            max_ttl: pick_dur("max_ttl", b.max_ttl)?,
            not_before_duration: pick_dur("not_before_duration", b.not_before_duration)?,
            key_type,
            key_bits,
            server_flag: pick_bool("server_flag", b.server_flag)?,
            client_flag: pick_bool("client_flag", b.client_flag)?,
            code_signing_flag: pick_bool("code_signing_flag", b.code_signing_flag)?,
            email_protection_flag: pick_bool("email_protection_flag", b.email_protection_flag)?,
            key_usage: norm_case(
                pick_list("key_usage", &b.key_usage)?,
                KEY_USAGES,
                "key_usage",
            )?,
            ext_key_usage: norm_case(
                pick_list("ext_key_usage", &b.ext_key_usage)?,
                EXT_KEY_USAGES,
                "ext_key_usage",
            )?,
            use_csr_common_name: pick_bool("use_csr_common_name", b.use_csr_common_name)?,
            use_csr_sans: pick_bool("use_csr_sans", b.use_csr_sans)?,
            require_cn: pick_bool("require_cn", b.require_cn)?,
            no_store: pick_bool("no_store", b.no_store)?,
            generate_lease: pick_bool("generate_lease", b.generate_lease)?,
            issuer_ref: if has("issuer_ref") {
                str_of(d, "issuer_ref")?
            } else {
                b.issuer_ref.clone()
            },
            country: pick_list("country", &b.country)?,
            organization: pick_list("organization", &b.organization)?,
            ou: pick_list("ou", &b.ou)?,
            locality: pick_list("locality", &b.locality)?,
            province: pick_list("province", &b.province)?,
            street_address: pick_list("street_address", &b.street_address)?,
            postal_code: pick_list("postal_code", &b.postal_code)?,
            profile,
            provenance_extensions: pick_bool("provenance_extensions", b.provenance_extensions)?,
        };
        if role.profile == Profile::Sba && !has("key_usage") {
            role.key_usage = vec!["DigitalSignature".into()];
        }
        role.validate()?;
        let warnings = d
            .keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .map(|k| format!("Endpoint ignored these unrecognized parameters: [{k}]"))
            .collect();
        Ok((role, warnings))
    }

    /// Checks the role's internal consistency and, for `3gpp-sba`, the profile's rules.
    pub fn validate(&self) -> Result<(), PkiError> {
        if self.max_ttl > 0 && self.ttl > self.max_ttl {
            return Err(PkiError::field("ttl", "must not exceed max_ttl"));
        }
        if self.issuer_ref.is_empty() {
            return Err(PkiError::field("issuer_ref", "must not be empty"));
        }
        for pat in &self.allowed_uri_sans {
            if pat.is_empty() {
                return Err(PkiError::field("allowed_uri_sans", "empty pattern"));
            }
        }
        if self.profile == Profile::Sba {
            let clause = "TS 33.310 6.1.3c";
            if self.country.len() != 1
                || self.country[0].len() != 2
                || !self.country[0].chars().all(|c| c.is_ascii_uppercase())
            {
                return Err(PkiError::Profile(format!("{clause}: a 3gpp-sba role needs exactly one two-letter upper-case country (subject C=)")));
            }
            if self.organization.len() != 1 || self.organization[0].trim().is_empty() {
                return Err(PkiError::Profile(format!("{clause}: a 3gpp-sba role needs exactly one organization, the home network domain (subject O=)")));
            }
            if self.max_ttl > SBA_MAX_VALIDITY || self.ttl > SBA_MAX_VALIDITY {
                return Err(PkiError::Profile(format!("{clause}: validity of SBA certificates is at most 3 years (max_ttl {}s > {SBA_MAX_VALIDITY}s)", self.max_ttl.max(self.ttl))));
            }
            if !self.server_flag && !self.client_flag {
                return Err(PkiError::Profile(format!("{clause}: EKU must include serverAuth and/or clientAuth; set server_flag or client_flag")));
            }
            if self.code_signing_flag
                || self.email_protection_flag
                || !self
                    .ext_key_usage
                    .iter()
                    .all(|e| e == "ServerAuth" || e == "ClientAuth")
            {
                return Err(PkiError::Profile(format!(
                    "{clause}: EKU may only be serverAuth and clientAuth"
                )));
            }
            if !self.key_usage.iter().all(|k| k == "DigitalSignature") {
                return Err(PkiError::Profile(format!("{clause}: keyUsage must be digitalSignature only (key_usage=[\"DigitalSignature\"])")));
            }
            if matches!(self.key_type, KeyType::Ed25519 | KeyType::Any) {
                return Err(PkiError::Profile(format!(
                    "{clause}: keys must be EC P-256/P-384 or RSA >= 2048 (key_type ec or rsa)"
                )));
            }
        }
        Ok(())
    }

    /// The role as `GET roles/:name` returns it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(json!({}));
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "profile".into(),
                json!(match self.profile {
                    Profile::None => "",
                    Profile::Sba => "3gpp-sba",
                }),
            );
        }
        v
    }
}

impl Default for Role {
    fn default() -> Self {
        Role {
            allowed_domains: vec![],
            allow_subdomains: false,
            allow_bare_domains: false,
            allow_glob_domains: false,
            allow_any_name: false,
            enforce_hostnames: true,
            allow_localhost: true,
            allow_wildcard_certificates: true,
            allow_ip_sans: true,
            allowed_uri_sans: vec![],
            ttl: 0,
            max_ttl: 0,
            not_before_duration: 30,
            key_type: KeyType::Rsa,
            key_bits: 2048,
            server_flag: true,
            client_flag: true,
            code_signing_flag: false,
            email_protection_flag: false,
            key_usage: vec![
                "DigitalSignature".into(),
                "KeyAgreement".into(),
                "KeyEncipherment".into(),
            ],
            ext_key_usage: vec![],
            use_csr_common_name: true,
            use_csr_sans: true,
            require_cn: true,
            no_store: false,
            generate_lease: false,
            issuer_ref: "default".into(),
            country: vec![],
            organization: vec![],
            ou: vec![],
            locality: vec![],
            province: vec![],
            street_address: vec![],
            postal_code: vec![],
            profile: Profile::None,
            provenance_extensions: false,
        }
    }
}
