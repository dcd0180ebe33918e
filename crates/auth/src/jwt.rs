//! JWT validation for the `jwt`/`oidc` and `kubernetes` login methods.
//!
//! The header is parsed here, before any key is touched, so that `alg: none` and the HMAC
//! family are refused by name: an HS256 token "signed" with an RSA public key as the HMAC
//! secret never reaches a verifier. Only allowlisted asymmetric algorithms are accepted, and
//! a key is only ever used with the algorithm family it belongs to. Signatures are checked by
//! `jsonwebtoken` (aws-lc-rs); claims are checked here, with messages naming the claim.

use crate::params::TokenParams;
use crate::{glob, AuthError};
use base64::Engine as _;
use custos_pki::fields::{bool_of, int_of, list_of, str_of};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use x509_parser::prelude::FromDer;

/// Largest token accepted, in bytes (Kubernetes tokens are ~1 KiB; OIDC tokens a few KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Algorithms Custos can verify. HS* and `none` are deliberately absent.
pub const SUPPORTED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The default allowlist when `jwt_supported_algs` is not set.
pub const DEFAULT_ALGS: &[&str] = &["RS256", "ES256", "EdDSA"];

/// Which algorithms a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// RSA: RS*/PS*.
    Rsa,
    /// EC P-256: ES256.
    P256,
    /// EC P-384: ES384.
    P384,
    /// Ed25519: EdDSA.
    Ed25519,
}

impl Family {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Family::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Family::P256 => alg == ES256,
            Family::P384 => alg == ES384,
            Family::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid` from the JWKS (none for PEM keys).
    pub kid: Option<String>,
    /// The JWK's `alg`, if it pins one.
    pub alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .finish()
    }
}

/// A set of verification keys (from PEM public keys or a JWKS document).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<VerifyKey>,
}

fn parse_alg(s: &str) -> Option<Algorithm> {
    if !SUPPORTED_ALGS.contains(&s) {
        return None;
    }
    s.parse().ok()
}

impl KeySet {
    /// Keys from PEM blocks: `PUBLIC KEY` (SubjectPublicKeyInfo) or `CERTIFICATE`, whose
    /// public key is used (as Vault and hvac expect for Kubernetes `pem_keys`). RSA (2048+),
    /// EC P-256/P-384 and Ed25519.
    pub fn from_pems(pems: &[String]) -> Result<KeySet, AuthError> {
        let mut keys = Vec::new();
        for (i, p) in pems.iter().enumerate() {
            let bad = |m: &str| AuthError::invalid(format!("public key {}: {m}", i + 1));
            let cert_der = pem_body(p, "CERTIFICATE");
            let spki_der = match &cert_der {
                Some(der) => {
                    let (_, c) = x509_parser::parse_x509_certificate(der)
                        .map_err(|_| bad("not a valid X.509 certificate"))?;
                    c.tbs_certificate.subject_pki.raw.to_vec()
                }
                None => pem_body(p, "PUBLIC KEY").ok_or_else(|| {
                    bad("not a PEM \"PUBLIC KEY\" (SubjectPublicKeyInfo) or \"CERTIFICATE\" block")
                })?,
            };
            let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der)
                .map_err(|_| bad("not a valid SubjectPublicKeyInfo"))?;
            let family = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(r)) => {
                    if r.key_size() < 2048 {
                        return Err(bad("RSA keys must be at least 2048 bits"));
                    }
                    Family::Rsa
                }
                Ok(x509_parser::public_key::PublicKey::EC(_)) => {
                    let curve = spki
                        .algorithm
                        .parameters
                        .as_ref()
                        .and_then(|p| p.as_oid().ok())
                        .map(|o| o.to_id_string());
                    match curve.as_deref() {
                        Some("1.2.840.10045.3.1.7") => Family::P256,
                        Some("1.3.132.0.34") => Family::P384,
                        _ => return Err(bad("EC keys must be on P-256 or P-384")),
                    }
                }
                _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => Family::Ed25519,
                _ => return Err(bad("unsupported key type (use RSA, EC or Ed25519)")),
            };
            // The BIT STRING's content: PKCS#1 for RSA, the point for EC, 32 bytes for Ed25519.
            let raw = spki.subject_public_key.data.as_ref();
            let key = match family {
                Family::Rsa => DecodingKey::from_rsa_der(raw),
                Family::P256 | Family::P384 => DecodingKey::from_ec_der(raw),
                Family::Ed25519 => DecodingKey::from_ed_der(raw),
            };
            keys.push(VerifyKey {
                kid: None,
                alg: None,
                family,
                key,
            });
        }
        Ok(KeySet { keys })
    }

    /// Keys from a JWKS document. Keys marked `"use": "enc"`, symmetric keys and unsupported
    /// types are skipped; a document with no usable key is an error.
    pub fn from_jwks(doc: &[u8]) -> Result<KeySet, AuthError> {
        let v: Value = serde_json::from_slice(doc)
            .map_err(|e| AuthError::invalid(format!("JWKS is not valid JSON: {e}")))?;
        let list = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::invalid("JWKS has no \"keys\" array"))?;
        let mut keys = Vec::new();
        for k in list {
            if k.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            let kty = k.get("kty").and_then(Value::as_str).unwrap_or("");
            let crv = k.get("crv").and_then(Value::as_str).unwrap_or("");
            let family = match (kty, crv) {
                ("RSA", _) => Family::Rsa,
                ("EC", "P-256") => Family::P256,
                ("EC", "P-384") => Family::P384,
                ("OKP", "Ed25519") => Family::Ed25519,
                _ => continue,
            };
            let alg = match k.get("alg").and_then(Value::as_str) {
                None => None,
                Some(a) => match parse_alg(a) {
                    Some(a) if family.fits(a) => Some(a),
                    // A key pinned to an algorithm we refuse (HS256...) is never used.
                    _ => continue,
                },
            };
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.push(VerifyKey {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                alg,
                family,
                key,
            });
        }
        if keys.is_empty() {
            return Err(AuthError::invalid("JWKS holds no usable signing key"));
        }
        Ok(KeySet { keys })
    }

    /// Whether some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The parts of a JWT header that decide how it is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The algorithm (one of [`SUPPORTED_ALGS`]).
    pub alg: Algorithm,
    /// The key ID, if any.
    pub kid: Option<String>,
}

/// Parses and screens the header: refuses `none`, HMAC, anything not in `allowed`, and
/// critical extensions this verifier does not understand.
pub fn header(token: &str, allowed: &[String]) -> Result<Header, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::invalid(format!(
            "token is larger than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::invalid(
            "token is not a compact JWS (three base64url parts separated by dots)",
        ));
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| AuthError::invalid("token header is not base64url"))?;
    let v: Map<String, Value> = serde_json::from_slice(&raw)
        .map_err(|_| AuthError::invalid("token header is not a JSON object"))?;
    let alg = v
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::invalid("token header has no \"alg\""))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(AuthError::denied(
            "unsigned tokens (alg \"none\") are never accepted",
        ));
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(AuthError::denied(format!(
            "symmetric algorithm {alg:?} is not accepted: only public-key signatures are"
        )));
    }
    let parsed = parse_alg(alg)
        .ok_or_else(|| AuthError::denied(format!("algorithm {alg:?} is not supported")))?;
    if !allowed.iter().any(|a| a == alg) {
        return Err(AuthError::denied(format!(
            "algorithm {alg:?} is not in jwt_supported_algs"
        )));
    }
    if v.contains_key("crit") {
        return Err(AuthError::denied(
            "token header lists critical extensions (\"crit\") this server does not support",
        ));
    }
    let kid = match v.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::invalid("token header \"kid\" must be a string")),
    };
    Ok(Header { alg: parsed, kid })
}

/// Verifies the signature with a key that fits the header, and returns the claims. Claims are
/// not judged here: see [`check_claims`].
pub fn verify(token: &str, h: &Header, keys: &KeySet) -> Result<Map<String, Value>, AuthError> {
    let any_kids = keys.keys.iter().any(|k| k.kid.is_some());
    let by_kid: Vec<&VerifyKey> = match (&h.kid, any_kids) {
        (Some(kid), true) => {
            let v: Vec<&VerifyKey> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if v.is_empty() {
                return Err(AuthError::UnknownKid(kid.clone()));
            }
            v
        }
        _ => keys.keys.iter().collect(),
    };
    let candidates: Vec<&VerifyKey> = by_kid
        .into_iter()
        .filter(|k| k.family.fits(h.alg) && k.alg.is_none_or(|a| a == h.alg))
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::denied(format!(
            "no configured key can verify {:?} signatures",
            h.alg
        )));
    }
    let mut v = Validation::new(h.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    for k in candidates {
        if let Ok(d) = jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &v) {
            return Ok(d.claims);
        }
    }
    Err(AuthError::denied("token signature verification failed"))
}

/// Time tolerances in seconds (Vault's `clock_skew_leeway`, `expiration_leeway`,
/// `not_before_leeway`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leeway {
    /// Applied to every time claim.
    pub clock_skew: i64,
    /// Extra time after `exp`.
    pub expiration: i64,
    /// Extra time before `nbf`.
    pub not_before: i64,
}

impl Default for Leeway {
    fn default() -> Self {
        Leeway {
            clock_skew: 60,
            expiration: 150,
            not_before: 150,
        }
    }
}

/// What the role requires of the claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimRules {
    /// `bound_issuer` (config): `iss` must equal it.
    pub bound_issuer: String,
    /// `bound_audiences`: `aud` must contain one of them.
    pub bound_audiences: Vec<String>,
    /// `bound_subject`: `sub` must equal it.
    pub bound_subject: String,
    /// `bound_claims`: claim (or JSON pointer) → allowed value(s).
    pub bound_claims: BTreeMap<String, Vec<String>>,
    /// `bound_claims_type == "glob"`.
    pub bound_claims_glob: bool,
    /// `user_claim`: names the identity (required).
    pub user_claim: String,
    /// `claim_mappings`: claim → metadata key.
    pub claim_mappings: BTreeMap<String, String>,
    /// Time tolerances.
    pub leeway: Leeway,
    /// Whether `exp` must be present (legacy Kubernetes tokens have none).
    pub require_exp: bool,
}

/// The identity a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `user_claim` value.
    pub user: String,
    /// From `claim_mappings`.
    pub metadata: BTreeMap<String, String>,
}

/// A claim by name, or by JSON pointer when the name starts with `/`.
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(pointer) = name.strip_prefix('/') {
        let mut cur: Option<&Value> = None;
        for (i, seg) in pointer.split('/').enumerate() {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            cur = if i == 0 {
                claims.get(&seg)
            } else {
                cur.and_then(|c| c.get(&seg))
            };
        }
        cur
    } else {
        claims.get(name)
    }
}

fn time_claim(claims: &Map<String, Value>, k: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| AuthError::invalid(format!("claim {k:?} is not a valid time"))),
        Some(_) => Err(AuthError::invalid(format!("claim {k:?} must be a number"))),
    }
}

fn as_strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect(),
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

/// Checks times, issuer, audience, subject and bound claims, and extracts the identity.
pub fn check_claims(
    claims: &Map<String, Value>,
    r: &ClaimRules,
    now: i64,
) -> Result<Identity, AuthError> {
    let skew = r.leeway.clock_skew.max(0);
    match time_claim(claims, "exp")? {
        Some(exp) if now > exp.saturating_add(skew + r.leeway.expiration.max(0)) => {
            return Err(AuthError::denied("token is expired (exp)"));
        }
        None if r.require_exp => {
            return Err(AuthError::denied("token has no expiry (exp)"));
        }
        _ => {}
    }
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if now < nbf.saturating_sub(skew + r.leeway.not_before.max(0)) {
            return Err(AuthError::denied("token is not valid yet (nbf)"));
        }
    }
    if let Some(iat) = time_claim(claims, "iat")? {
        if iat > now.saturating_add(skew + r.leeway.not_before.max(0)) {
            return Err(AuthError::denied("token was issued in the future (iat)"));
        }
    }
    if !r.bound_issuer.is_empty()
        && claims.get("iss").and_then(Value::as_str) != Some(r.bound_issuer.as_str())
    {
        return Err(AuthError::denied(
            "claim \"iss\" does not match bound_issuer",
        ));
    }
    let aud = claims.get("aud").map(as_strings).unwrap_or_default();
    if r.bound_audiences.is_empty() {
        if !aud.is_empty() {
            return Err(AuthError::denied(
                "token has an audience (aud) but the role binds none: set bound_audiences",
            ));
        }
    } else if !aud.iter().any(|a| r.bound_audiences.contains(a)) {
        return Err(AuthError::denied(
            "claim \"aud\" does not match any of the role's bound_audiences",
        ));
    }
    if !r.bound_subject.is_empty()
        && claims.get("sub").and_then(Value::as_str) != Some(r.bound_subject.as_str())
    {
        return Err(AuthError::denied(
            "claim \"sub\" does not match bound_subject",
        ));
    }
    for (name, allowed) in &r.bound_claims {
        let got = claim(claims, name).map(as_strings).unwrap_or_default();
        let ok = got.iter().any(|g| {
            allowed.iter().any(|a| {
                if r.bound_claims_glob {
                    glob(a, g)
                } else {
                    a == g
                }
            })
        });
        if !ok {
            return Err(AuthError::denied(format!(
                "claim {name:?} does not match any associated bound claim value"
            )));
        }
    }
    let user = match claim(claims, &r.user_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(AuthError::denied(format!(
                "claim {:?} (user_claim) is missing or not a string",
                r.user_claim
            )))
        }
    };
    let mut metadata = BTreeMap::new();
    for (c, key) in &r.claim_mappings {
        if let Some(v) = claim(claims, c) {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => continue,
            };
            metadata.insert(key.clone(), s);
        }
    }
    Ok(Identity { user, metadata })
}

/// `auth/<jwt>/config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JwtConfig {
    /// `oidc_discovery_url`: keys come from its `jwks_uri`.
    pub oidc_discovery_url: String,
    /// `jwks_url`.
    pub jwks_url: String,
    /// `jwt_validation_pubkeys`: PEM public keys.
    pub jwt_validation_pubkeys: Vec<String>,
    /// `jwks_ca_pem` / `oidc_discovery_ca_pem`: trust anchor for fetching keys.
    pub ca_pem: String,
    /// `bound_issuer`.
    pub bound_issuer: String,
    /// `jwt_supported_algs`.
    pub jwt_supported_algs: Vec<String>,
    /// `default_role`.
    pub default_role: String,
}

/// Fields of `auth/<jwt>/config`.
pub const CONFIG_FIELDS: &[&str] = &[
    "oidc_discovery_url",
    "oidc_discovery_ca_pem",
    "jwks_url",
    "jwks_ca_pem",
    "jwt_validation_pubkeys",
    "bound_issuer",
    "jwt_supported_algs",
    "default_role",
];

impl JwtConfig {
    /// Builds the config from a write (replacing the previous one, as Vault does).
    pub fn from_request(d: &Map<String, Value>) -> Result<JwtConfig, AuthError> {
        if let Some(k) = d.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        let mut c = JwtConfig {
            oidc_discovery_url: str_of(d, "oidc_discovery_url")?,
            jwks_url: str_of(d, "jwks_url")?,
            jwt_validation_pubkeys: list_pems(d, "jwt_validation_pubkeys")?,
            ca_pem: {
                let a = str_of(d, "jwks_ca_pem")?;
                if a.is_empty() {
                    str_of(d, "oidc_discovery_ca_pem")?
                } else {
                    a
                }
            },
            bound_issuer: str_of(d, "bound_issuer")?,
            jwt_supported_algs: list_of(d, "jwt_supported_algs")?,
            default_role: str_of(d, "default_role")?,
        };
        let sources = [
            !c.oidc_discovery_url.is_empty(),
            !c.jwks_url.is_empty(),
            !c.jwt_validation_pubkeys.is_empty(),
        ];
        if sources.iter().filter(|b| **b).count() != 1 {
            return Err(AuthError::invalid(
                "exactly one of oidc_discovery_url, jwks_url or jwt_validation_pubkeys must be set",
            ));
        }
        for u in [&c.oidc_discovery_url, &c.jwks_url] {
            if !(u.is_empty() || u.starts_with("https://") || u.starts_with("http://")) {
                return Err(AuthError::invalid(format!("{u:?} is not an http(s) URL")));
            }
        }
        if !c.jwt_validation_pubkeys.is_empty() {
            KeySet::from_pems(&c.jwt_validation_pubkeys)?;
        }
        if c.jwt_supported_algs.is_empty() {
            c.jwt_supported_algs = DEFAULT_ALGS.iter().map(|s| s.to_string()).collect();
        }
        for a in &c.jwt_supported_algs {
            if parse_alg(a).is_none() {
                return Err(AuthError::invalid(format!(
                    "jwt_supported_algs: {a:?} is not supported (allowed: {})",
                    SUPPORTED_ALGS.join(", ")
                )));
            }
        }
        Ok(c)
    }

    /// The config as read back (Vault's field names).
    pub fn to_json(&self) -> Value {
        json!({
            "oidc_discovery_url": self.oidc_discovery_url,
            "jwks_url": self.jwks_url,
            "jwt_validation_pubkeys": self.jwt_validation_pubkeys,
            "jwks_ca_pem": self.ca_pem,
            "bound_issuer": self.bound_issuer,
            "jwt_supported_algs": self.jwt_supported_algs,
            "default_role": self.default_role,
        })
    }
}

/// A list of PEM blocks: a JSON array, or one string holding several blocks.
pub fn list_pems(d: &Map<String, Value>, k: &str) -> Result<Vec<String>, AuthError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(split_pems(s)),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for v in a {
                let s = v.as_str().ok_or_else(|| {
                    AuthError::invalid(format!("{k}: must be a list of PEM strings"))
                })?;
                out.extend(split_pems(s));
            }
            Ok(out)
        }
        Some(_) => Err(AuthError::invalid(format!(
            "{k}: must be a list of PEM strings"
        ))),
    }
}

fn split_pems(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in s.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// `auth/<jwt>/role/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JwtRole {
    /// Claim rules (`bound_issuer` comes from the config at login).
    pub rules: ClaimRules,
    /// The token a login gets.
    pub token: TokenParams,
}

/// Fields of a JWT role.
pub const ROLE_FIELDS: &[&str] = &[
    "role_type",
    "bound_audiences",
    "bound_subject",
    "bound_claims",
    "bound_claims_type",
    "user_claim",
    "claim_mappings",
    "groups_claim",
    "clock_skew_leeway",
    "expiration_leeway",
    "not_before_leeway",
    "verbose_oidc_logging",
    // Browser-flow (OIDC role_type) fields: accepted for client compatibility, unused by
    // role_type "jwt" (hvac sends allowed_redirect_uris on every create_role).
    "allowed_redirect_uris",
    "oidc_scopes",
    "max_age",
];

fn string_map(d: &Map<String, Value>, k: &str) -> Result<Option<Map<String, Value>>, AuthError> {
    match d.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(Map::new())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err(AuthError::invalid(format!("{k}: must be a map"))),
        },
        Some(_) => Err(AuthError::invalid(format!("{k}: must be a map"))),
    }
}

fn leeway_of(d: &Map<String, Value>, k: &str, cur: i64, default: i64) -> Result<i64, AuthError> {
    if !d.contains_key(k) {
        return Ok(cur);
    }
    // Vault: 0 means the default; a negative value means none.
    let n = int_of(d, k, 0).or_else(|_| {
        custos_pki::fields::duration_of(d, k).map(|s| i64::try_from(s).unwrap_or(i64::MAX))
    })?;
    Ok(match n {
        0 => default,
        n if n < 0 => 0,
        n => n.min(86_400),
    })
}

impl JwtRole {
    /// Creates or updates a role from a write; `extra` lists further allowed field names
    /// (the Kubernetes method reuses this for its own fields).
    pub fn update(&mut self, d: &Map<String, Value>, extra: &[&str]) -> Result<(), AuthError> {
        if let Some(k) = d.keys().find(|k| {
            !ROLE_FIELDS.contains(&k.as_str())
                && !crate::params::FIELDS.contains(&k.as_str())
                && !extra.contains(&k.as_str())
        }) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        if let Some(t) = d.get("role_type").and_then(Value::as_str) {
            if !matches!(t, "" | "jwt") {
                return Err(AuthError::invalid(format!(
                    "role_type: {t:?} is not supported (browser OIDC flows are not offered; use \"jwt\")"
                )));
            }
        }
        let r = &mut self.rules;
        if d.contains_key("bound_audiences") {
            r.bound_audiences = list_of(d, "bound_audiences")?;
        }
        if d.contains_key("bound_subject") {
            r.bound_subject = str_of(d, "bound_subject")?;
        }
        if let Some(m) = string_map(d, "bound_claims")? {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let vals = match &v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(_) => as_strings(&v),
                    Value::Number(_) | Value::Bool(_) => vec![v.to_string()],
                    _ => {
                        return Err(AuthError::invalid(format!(
                            "bound_claims: value of {k:?} must be a string or a list of strings"
                        )))
                    }
                };
                if vals.is_empty() {
                    return Err(AuthError::invalid(format!(
                        "bound_claims: {k:?} has no allowed value"
                    )));
                }
                out.insert(k, vals);
            }
            r.bound_claims = out;
        }
        if d.contains_key("bound_claims_type") {
            r.bound_claims_glob = match str_of(d, "bound_claims_type")?.as_str() {
                "" | "string" => false,
                "glob" => true,
                other => {
                    return Err(AuthError::invalid(format!(
                        "bound_claims_type: {other:?} must be \"string\" or \"glob\""
                    )))
                }
            };
        }
        if d.contains_key("user_claim") {
            r.user_claim = str_of(d, "user_claim")?;
        }
        if let Some(m) = string_map(d, "claim_mappings")? {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| AuthError::invalid("claim_mappings: values must be strings"))?;
                if out.values().any(|x: &String| x == v) {
                    return Err(AuthError::invalid(format!(
                        "claim_mappings: metadata key {v:?} is mapped twice"
                    )));
                }
                out.insert(k, v.to_string());
            }
            r.claim_mappings = out;
        }
        let dl = Leeway::default();
        r.leeway = Leeway {
            clock_skew: leeway_of(d, "clock_skew_leeway", r.leeway.clock_skew, dl.clock_skew)?,
            expiration: leeway_of(d, "expiration_leeway", r.leeway.expiration, dl.expiration)?,
            not_before: leeway_of(d, "not_before_leeway", r.leeway.not_before, dl.not_before)?,
        };
        let _ = bool_of(d, "verbose_oidc_logging", false)?;
        self.token.update(d)?;
        if r.user_claim.is_empty() {
            return Err(AuthError::invalid("user_claim: is required"));
        }
        if r.bound_audiences.is_empty() && r.bound_subject.is_empty() && r.bound_claims.is_empty() {
            return Err(AuthError::invalid(
                "a role must bind at least one of bound_audiences, bound_subject or bound_claims",
            ));
        }
        Ok(())
    }

    /// The role as read back.
    pub fn to_json(&self) -> Value {
        let r = &self.rules;
        let mut m = Map::new();
        m.insert("role_type".into(), json!("jwt"));
        m.insert("bound_audiences".into(), json!(r.bound_audiences));
        m.insert("bound_subject".into(), json!(r.bound_subject));
        m.insert("bound_claims".into(), json!(r.bound_claims));
        m.insert(
            "bound_claims_type".into(),
            json!(if r.bound_claims_glob {
                "glob"
            } else {
                "string"
            }),
        );
        m.insert("user_claim".into(), json!(r.user_claim));
        m.insert("claim_mappings".into(), json!(r.claim_mappings));
        m.insert("clock_skew_leeway".into(), json!(r.leeway.clock_skew));
        m.insert("expiration_leeway".into(), json!(r.leeway.expiration));
        m.insert("not_before_leeway".into(), json!(r.leeway.not_before));
        self.token.to_json(&mut m);
        Value::Object(m)
    }
}
