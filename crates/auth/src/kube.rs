//! Kubernetes service-account tokens: both the projected (bound) format, with the
//! `kubernetes.io` claim, and the legacy secret-based format.

use crate::jwt::{claim, list_pems, ClaimRules, KeySet};
use crate::params::TokenParams;
use crate::{glob, AuthError};
use custos_pki::fields::{bool_of, list_of, str_of};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The issuer of legacy (secret-based) service-account tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// `auth/<kubernetes>/config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeConfig {
    /// `kubernetes_host`: the API server (TokenReview), used when no `pem_keys` are set.
    pub kubernetes_host: String,
    /// `kubernetes_ca_cert`: trust anchor for `kubernetes_host`.
    pub kubernetes_ca_cert: String,
    /// `token_reviewer_jwt`: the reviewer's credential (else the caller's own token).
    pub token_reviewer_jwt: String,
    /// `pem_keys`: offline validation keys (the cluster's service-account signing keys).
    pub pem_keys: Vec<String>,
    /// `jwks_url` (Custos extension): offline validation with the cluster's published
    /// service-account issuer keys (`<issuer>/openid/v1/jwks`), fetched and cached like the
    /// JWT method's. Trusts `kubernetes_ca_cert` when set.
    #[serde(default)]
    pub jwks_url: String,
    /// `issuer`: expected `iss` for offline validation.
    pub issuer: String,
    /// `disable_iss_validation`.
    pub disable_iss_validation: bool,
}

const CONFIG_FIELDS: &[&str] = &[
    "kubernetes_host",
    "kubernetes_ca_cert",
    "token_reviewer_jwt",
    "pem_keys",
    "jwks_url",
    "issuer",
    "disable_iss_validation",
    "disable_local_ca_jwt",
];

impl KubeConfig {
    /// Builds the config from a write.
    pub fn from_request(d: &Map<String, Value>) -> Result<KubeConfig, AuthError> {
        if let Some(k) = d.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        let c = KubeConfig {
            kubernetes_host: str_of(d, "kubernetes_host")?,
            kubernetes_ca_cert: str_of(d, "kubernetes_ca_cert")?,
            token_reviewer_jwt: str_of(d, "token_reviewer_jwt")?,
            pem_keys: list_pems(d, "pem_keys")?,
            jwks_url: str_of(d, "jwks_url")?,
            issuer: str_of(d, "issuer")?,
            disable_iss_validation: bool_of(d, "disable_iss_validation", false)?,
        };
        let _ = bool_of(d, "disable_local_ca_jwt", false)?;
        // Vault requires kubernetes_host (hvac always sends it). When pem_keys are set, tokens
        // are validated offline with them and the API server is not called.
        if c.kubernetes_host.is_empty() && c.pem_keys.is_empty() && c.jwks_url.is_empty() {
            return Err(AuthError::invalid(
                "set kubernetes_host (TokenReview), or pem_keys or jwks_url (offline validation)",
            ));
        }
        let j = &c.jwks_url;
        if !(j.is_empty() || j.starts_with("https://") || j.starts_with("http://")) {
            return Err(AuthError::invalid(format!(
                "jwks_url: {j:?} is not an http(s) URL"
            )));
        }
        let h = &c.kubernetes_host;
        if !(h.is_empty() || h.starts_with("https://") || h.starts_with("http://")) {
            return Err(AuthError::invalid(format!(
                "kubernetes_host: {h:?} is not an http(s) URL"
            )));
        }
        if !c.pem_keys.is_empty() {
            KeySet::from_pems(&c.pem_keys)?;
        }
        Ok(c)
    }

    /// The config as read back (the reviewer JWT is never returned).
    pub fn to_json(&self) -> Value {
        json!({
            "kubernetes_host": self.kubernetes_host,
            "kubernetes_ca_cert": self.kubernetes_ca_cert,
            "pem_keys": self.pem_keys,
            "jwks_url": self.jwks_url,
            "issuer": self.issuer,
            "disable_iss_validation": self.disable_iss_validation,
        })
    }
}

/// `auth/<kubernetes>/role/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeRole {
    /// `bound_service_account_names` (`*` globs allowed).
    pub names: Vec<String>,
    /// `bound_service_account_namespaces` (`*` globs allowed).
    pub namespaces: Vec<String>,
    /// `audience`: when set, `aud` must contain it.
    pub audience: String,
    /// The token a login gets.
    pub token: TokenParams,
}

const ROLE_FIELDS: &[&str] = &[
    "bound_service_account_names",
    "bound_service_account_namespaces",
    "audience",
    "alias_name_source",
];

impl KubeRole {
    /// Creates or updates a role from a write.
    pub fn update(&mut self, d: &Map<String, Value>) -> Result<(), AuthError> {
        if let Some(k) = d.keys().find(|k| {
            !ROLE_FIELDS.contains(&k.as_str()) && !crate::params::FIELDS.contains(&k.as_str())
        }) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        if d.contains_key("bound_service_account_names") {
            self.names = list_of(d, "bound_service_account_names")?;
        }
        if d.contains_key("bound_service_account_namespaces") {
            self.namespaces = list_of(d, "bound_service_account_namespaces")?;
        }
        if d.contains_key("audience") {
            self.audience = str_of(d, "audience")?;
        }
        if let Some(s) = d.get("alias_name_source").and_then(Value::as_str) {
            if !matches!(s, "" | "serviceaccount_uid" | "serviceaccount_name") {
                return Err(AuthError::invalid(format!(
                    "alias_name_source: {s:?} is not supported"
                )));
            }
        }
        self.token.update(d)?;
        if self.names.is_empty() || self.namespaces.is_empty() {
            return Err(AuthError::invalid(
                "bound_service_account_names and bound_service_account_namespaces are required (use \"*\" explicitly for any)",
            ));
        }
        if self.names.iter().any(|n| n == "*") && self.namespaces.iter().any(|n| n == "*") {
            return Err(AuthError::invalid(
                "bound_service_account_names and bound_service_account_namespaces cannot both be \"*\"",
            ));
        }
        Ok(())
    }

    /// The role as read back.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("bound_service_account_names".into(), json!(self.names));
        m.insert(
            "bound_service_account_namespaces".into(),
            json!(self.namespaces),
        );
        m.insert("audience".into(), json!(self.audience));
        m.insert("alias_name_source".into(), json!("serviceaccount_uid"));
        self.token.to_json(&mut m);
        Value::Object(m)
    }

    /// Claim rules for offline validation: the audience if bound; times with default
    /// leeways; `exp` optional because legacy tokens carry none.
    pub fn claim_rules(&self, cfg: &KubeConfig, legacy: bool) -> ClaimRules {
        let bound_issuer = if cfg.disable_iss_validation {
            String::new()
        } else if legacy {
            LEGACY_ISSUER.to_string()
        } else {
            cfg.issuer.clone()
        };
        ClaimRules {
            bound_issuer,
            bound_audiences: if self.audience.is_empty() {
                Vec::new()
            } else {
                vec![self.audience.clone()]
            },
            user_claim: "sub".into(),
            require_exp: !legacy,
            ..ClaimRules::default()
        }
    }

    /// Refuses a service account this role does not bind.
    pub fn check(&self, sa: &ServiceAccount) -> Result<(), AuthError> {
        if !self.namespaces.iter().any(|p| glob(p, &sa.namespace)) {
            return Err(AuthError::denied(format!(
                "namespace {:?} is not authorized by bound_service_account_namespaces",
                sa.namespace
            )));
        }
        if !self.names.iter().any(|p| glob(p, &sa.name)) {
            return Err(AuthError::denied(format!(
                "service account {:?} is not authorized by bound_service_account_names",
                sa.name
            )));
        }
        Ok(())
    }
}

/// The service account a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (may be empty for legacy tokens of old clusters).
    pub uid: String,
    /// Whether the token is a legacy secret-based one.
    pub legacy: bool,
}

fn s(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_string()
}

/// Extracts the service account from token claims, and checks that `sub` agrees with it.
pub fn service_account(claims: &Map<String, Value>) -> Result<ServiceAccount, AuthError> {
    let sa = if claims.contains_key("kubernetes.io") {
        ServiceAccount {
            namespace: s(claim(claims, "/kubernetes.io/namespace")),
            name: s(claim(claims, "/kubernetes.io/serviceaccount/name")),
            uid: s(claim(claims, "/kubernetes.io/serviceaccount/uid")),
            legacy: false,
        }
    } else {
        ServiceAccount {
            namespace: s(claims.get("kubernetes.io/serviceaccount/namespace")),
            name: s(claims.get("kubernetes.io/serviceaccount/service-account.name")),
            uid: s(claims.get("kubernetes.io/serviceaccount/service-account.uid")),
            legacy: true,
        }
    };
    if sa.namespace.is_empty() || sa.name.is_empty() {
        return Err(AuthError::denied(
            "token is not a Kubernetes service-account token (no namespace or name claim)",
        ));
    }
    let want = format!("system:serviceaccount:{}:{}", sa.namespace, sa.name);
    if claims.get("sub").and_then(Value::as_str) != Some(want.as_str()) {
        return Err(AuthError::denied(
            "claim \"sub\" does not match the service account named in the token",
        ));
    }
    Ok(sa)
}

/// The body of a TokenReview (`authentication.k8s.io/v1`) for `jwt`, bound to `audience`
/// if the role sets one.
pub fn token_review_request(jwt: &str, audience: &str) -> Value {
    let mut spec = json!({ "token": jwt });
    if !audience.is_empty() {
        spec["audiences"] = json!([audience]);
    }
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": spec,
    })
}

/// Reads the API server's TokenReview answer: the token must be authenticated, for a
/// service account (`system:serviceaccount:<ns>:<name>`), and for the role's audience.
pub fn service_account_from_review(v: &Value, audience: &str) -> Result<ServiceAccount, AuthError> {
    let st = v
        .get("status")
        .ok_or_else(|| AuthError::denied("TokenReview answer has no status"))?;
    if st.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let why = st
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("not authenticated");
        return Err(AuthError::denied(format!(
            "the Kubernetes API server rejected the token: {why}"
        )));
    }
    let user = st.get("user").cloned().unwrap_or(Value::Null);
    let username = s(user.get("username"));
    let parts: Vec<&str> = username.split(':').collect();
    let (namespace, name) = match parts.as_slice() {
        ["system", "serviceaccount", ns, n] if !ns.is_empty() && !n.is_empty() => {
            (ns.to_string(), n.to_string())
        }
        _ => {
            return Err(AuthError::denied(format!(
                "the token belongs to {username:?}, not a service account"
            )))
        }
    };
    if !audience.is_empty() {
        let ok = st
            .get("audiences")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(audience)));
        if !ok {
            return Err(AuthError::denied(format!(
                "the token is not valid for audience {audience:?}"
            )));
        }
    }
    Ok(ServiceAccount {
        namespace,
        name,
        uid: s(user.get("uid")),
        legacy: false,
    })
}
