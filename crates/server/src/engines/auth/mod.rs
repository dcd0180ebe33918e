//! Login methods mounted at `auth/<path>/` (`sys/auth/<path>` with a type): `approle`,
//! `jwt` (and `oidc`, the same method with discovery), and `kubernetes` with offline
//! validation. The decisions are made by `custos-auth`; this module stores roles, fetches
//! and caches keys, audits logins and mints tokens.
//!
//! Storage, all inside the barrier, under `auth/<mount uuid>/`: `config`, `role/<name>`,
//! and for AppRole `role_id/<role id>` (→ role name), `secret_id/<role>/<hmac>` and
//! `secret_id_accessor/<role>/<accessor>` (→ hmac). Secret IDs themselves are never stored.

use crate::core::barrier::{Plain, View};
use crate::core::engine::{Ctx, Engine, Login, PathSpec, Sys};
use crate::core::services::RevocationLookup;
use crate::core::{now_unix, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use custos_acl::Operation::*;
use custos_auth::approle::{valid_id, AppRole, SecretId};
use custos_auth::cert::CertRole;
use custos_auth::jwt::{self, JwtConfig, JwtRole, KeySet};
use custos_auth::kube::{service_account, KubeConfig, KubeRole, ServiceAccount};
use custos_auth::AuthError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Login method types this engine offers (besides the core's built-in token method).
pub const KINDS: [&str; 5] = ["approle", "jwt", "oidc", "kubernetes", "cert"];

/// What the login methods share: the PKI's revocation lookup, fetched key sets, and the
/// lock that counts secret-ID uses.
pub struct Shared {
    revocation: Arc<dyn RevocationLookup>,
    jwks: JwksCache,
    /// Serialises use counts of secret IDs, so a single-use secret ID logs in once.
    use_lock: tokio::sync::Mutex<()>,
}

/// One login method type (`approle`, `jwt`, `oidc`, `kubernetes`, `cert`).
pub struct LoginMethod {
    kind: &'static str,
    shared: Arc<Shared>,
}

/// Every login method type, sharing `revocation` for certificate login.
pub fn methods(revocation: Arc<dyn RevocationLookup>) -> Vec<(&'static str, Arc<LoginMethod>)> {
    let shared = Arc::new(Shared {
        revocation,
        jwks: JwksCache::default(),
        use_lock: tokio::sync::Mutex::new(()),
    });
    KINDS
        .iter()
        .map(|k| {
            (
                *k,
                Arc::new(LoginMethod {
                    kind: k,
                    shared: shared.clone(),
                }),
            )
        })
        .collect()
}

/// One request's handle: the mount's storage and what the methods share.
struct Au<'a> {
    view: View,
    shared: &'a Shared,
    sys: &'a Sys,
}

impl std::ops::Deref for Au<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        &self.view
    }
}

#[async_trait::async_trait]
impl Engine for LoginMethod {
    fn storage_root(&self) -> &'static str {
        "auth/"
    }

    fn route(&self, sub: &str) -> Option<PathSpec> {
        route(self.kind, sub)
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
        handle(&self.au(ctx), ctx.mount, ctx.sub, req).await
    }

    async fn login(&self, ctx: &Ctx<'_>, req: &Request) -> ApiResult<Login> {
        login(&self.au(ctx), ctx.mount, req).await
    }

    fn login_bucket(&self, m: &MountEntry, req: &Request) -> String {
        limit_key(m, req)
    }

    fn seal(&self) {
        if let Ok(mut c) = self.shared.jwks.sets.lock() {
            c.clear();
        }
    }

    async fn unmount(&self, _sys: &Sys, m: &MountEntry) -> ApiResult<()> {
        if let Ok(mut c) = self.shared.jwks.sets.lock() {
            c.remove(&m.uuid);
        }
        Ok(())
    }
}

impl LoginMethod {
    fn au<'a>(&'a self, ctx: &'a Ctx<'_>) -> Au<'a> {
        Au {
            view: ctx.view.clone(),
            shared: &self.shared,
            sys: ctx.sys,
        }
    }
}

/// The route table of one auth mount of type `kind`.
fn route(kind: &str, sub: &str) -> Option<PathSpec> {
    let parts: Vec<&str> = sub.split('/').collect();
    let r = |ops, login: bool| {
        Some(if login {
            PathSpec::new(ops).login()
        } else {
            PathSpec::new(ops)
        })
    };
    match (kind, parts.as_slice()) {
        (_, ["login"]) => r(&[Update], true),
        (_, ["role"]) => r(&[List, Read], false),
        (_, ["role", _]) => r(&[Read, Create, Update, Delete], false),
        ("jwt" | "oidc" | "kubernetes", ["config"]) => r(&[Read, Create, Update], false),
        ("cert", ["certs" | "crls"]) => r(&[List, Read], false),
        ("cert", ["certs" | "crls", _]) => r(&[Read, Create, Update, Delete], false),
        ("approle", ["role", _, "role-id"]) => r(&[Read, Update], false),
        ("approle", ["role", _, "secret-id"]) => r(&[Update, List, Read], false),
        ("approle", ["role", _, "secret-id", "lookup" | "destroy"])
        | ("approle", ["role", _, "secret-id-accessor", "lookup" | "destroy"]) => {
            r(&[Update], false)
        }
        _ => None,
    }
}

/// The role part of a login's rate-limit bucket (AppRole role IDs hashed).
fn limit_key(m: &MountEntry, req: &Request) -> String {
    let role = match m.kind.as_str() {
        "approle" => req
            .data
            .get("role_id")
            .and_then(Value::as_str)
            .map(hex_id)
            .unwrap_or_default(),
        "cert" => req.str_field("name").unwrap_or_default(),
        _ => req.str_field("role").unwrap_or_default(),
    };
    role
}

fn valid_name(name: &str) -> ApiResult<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(ApiError::bad(
            "role name: use 1 to 128 letters, digits, '-', '_', '.' or '@'",
        ));
    }
    Ok(())
}

/// Fetched key sets per mount, with the time of the last fetch (for refresh rate limiting).
#[derive(Default)]
pub(crate) struct JwksCache {
    sets: Mutex<HashMap<String, (KeySet, Instant)>>,
}

/// A JWKS is re-fetched at most this often, whatever `kid`s tokens name.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// And at least this often.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest key document accepted.
const MAX_KEY_DOC: usize = 256 * 1024;

async fn fetch(url: &str, ca_pem: &str) -> ApiResult<Vec<u8>> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if !ca_pem.is_empty() {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|_| ApiError::bad("jwks_ca_pem: not a valid PEM certificate"))?;
        b = b.tls_certs_only([ca]);
    }
    let client = b.build().map_err(ApiError::internal)?;
    let unreachable = |e: String| ApiError::LoginDenied(format!("fetching keys from {url}: {e}"));
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !r.status().is_success() {
        return Err(unreachable(format!("HTTP {}", r.status())));
    }
    let body = r.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if body.len() > MAX_KEY_DOC {
        return Err(unreachable("document too large".into()));
    }
    Ok(body.to_vec())
}

async fn jwks_url_of(cfg: &JwtConfig) -> ApiResult<String> {
    if !cfg.jwks_url.is_empty() {
        return Ok(cfg.jwks_url.clone());
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        cfg.oidc_discovery_url.trim_end_matches('/')
    );
    let doc: Value = serde_json::from_slice(&fetch(&url, &cfg.ca_pem).await?)
        .map_err(|_| ApiError::LoginDenied("OIDC discovery document is not JSON".into()))?;
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::LoginDenied("OIDC discovery document has no jwks_uri".into()))
}

/// The mount's keys: configured PEMs, or the cached JWKS (fetched when absent or stale, or
/// when `want_kid` is unknown and the last fetch is older than [`JWKS_MIN_REFRESH`]).
async fn keys_for(
    a: &Au<'_>,
    m: &MountEntry,
    cfg: &JwtConfig,
    want_kid: Option<&str>,
) -> ApiResult<KeySet> {
    if !cfg.jwt_validation_pubkeys.is_empty() {
        return Ok(KeySet::from_pems(&cfg.jwt_validation_pubkeys)?);
    }
    let cached = a
        .shared
        .jwks
        .sets
        .lock()
        .map_err(|_| ApiError::internal(std::io::Error::other("jwks cache poisoned")))?
        .get(&m.uuid)
        .cloned();
    if let Some((set, at)) = &cached {
        let fresh = at.elapsed() < JWKS_MAX_AGE;
        let kid_ok = want_kid.is_none_or(|k| set.has_kid(k));
        if fresh && (kid_ok || at.elapsed() < JWKS_MIN_REFRESH) {
            return Ok(set.clone());
        }
    }
    let url = jwks_url_of(cfg).await?;
    let set = KeySet::from_jwks(&fetch(&url, &cfg.ca_pem).await?)?;
    if let Ok(mut c) = a.shared.jwks.sets.lock() {
        c.insert(m.uuid.clone(), (set.clone(), Instant::now()));
    }
    Ok(set)
}

fn forget_keys(a: &Au<'_>, m: &MountEntry) {
    if let Ok(mut c) = a.shared.jwks.sets.lock() {
        c.remove(&m.uuid);
    }
}

/// Verifies a JWT against the mount's keys, refreshing the JWKS once for an unknown `kid`.
async fn verified_claims(
    a: &Au<'_>,
    m: &MountEntry,
    cfg: &JwtConfig,
    token: &str,
) -> ApiResult<Map<String, Value>> {
    let h = jwt::header(token, &cfg.jwt_supported_algs)?;
    let keys = keys_for(a, m, cfg, h.kid.as_deref()).await?;
    match jwt::verify(token, &h, &keys) {
        Err(AuthError::UnknownKid(k)) => Err(ApiError::LoginDenied(format!(
            "no key with kid {k:?} is known, also after refreshing the JWKS"
        ))),
        r => Ok(r?),
    }
}

fn login_field(req: &Request, k: &str) -> ApiResult<String> {
    match req.data.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::bad(format!("missing required field {k:?}"))),
        Some(Value::String(_)) => Err(ApiError::bad(format!("{k}: must not be empty"))),
        Some(_) => Err(ApiError::bad(format!("{k}: must be a string"))),
    }
}

fn meta_map<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect()
}

/// Logins (no token). Every outcome is audited by the caller.
async fn login(a: &Au<'_>, m: &MountEntry, req: &Request) -> ApiResult<Login> {
    match m.kind.as_str() {
        "approle" => {
            let role_id = login_field(req, "role_id")?;
            let denied = || ApiError::LoginDenied("invalid role or secret ID".into());
            let name: String = a
                .get_json(&format!("role_id/{}", hex_id(&role_id)))
                .await?
                .ok_or_else(denied)?;
            let role: AppRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(denied)?;
            let remote = req.remote_addr.map(|r| r.ip());
            let mut meta = meta_map([("role_name", name.clone())]);
            let mut token_params = role.token.clone();
            if role.bind_secret_id {
                let secret = login_field(req, "secret_id")?;
                let key = format!("secret_id/{name}/{}", secret_hash(a, &secret)?);
                // Uses are counted under one lock so a single-use secret ID logs in once.
                let _g = a.shared.use_lock.lock().await;
                let mut s: SecretId = a.get_json(&key).await?.ok_or_else(denied)?;
                s.check(&role, now_unix(), remote).map_err(|_| denied())?;
                let mut ops = Vec::new();
                if s.num_uses == 1 {
                    ops.push(Plain::Delete(key.clone()));
                    ops.push(Plain::Delete(format!(
                        "secret_id_accessor/{name}/{}",
                        s.accessor
                    )));
                } else if s.num_uses > 1 {
                    s.num_uses -= 1;
                    ops.push(Plain::Put(key.clone(), serde_json::to_vec(&s)?));
                }
                if !ops.is_empty() {
                    a.write(ops).await?;
                }
                for (k, v) in &s.metadata {
                    meta.insert(k.clone(), v.clone());
                }
                if !s.token_bound_cidrs.is_empty() {
                    token_params.bound_cidrs = s.token_bound_cidrs.clone();
                }
            } else {
                custos_auth::params::check_source(
                    &role.secret_id_bound_cidrs,
                    remote,
                    "secret_id_bound_cidrs",
                )?;
            }
            Ok(Login {
                params: token_params,
                display_name: format!("approle-{name}"),
                meta,
            })
        }
        "jwt" | "oidc" => {
            let cfg: JwtConfig = a
                .get_json("config")
                .await?
                .ok_or_else(|| ApiError::bad("this JWT method is not configured yet"))?;
            let mut name = req.str_field("role").unwrap_or_default();
            if name.is_empty() {
                name = cfg.default_role.clone();
            }
            if name.is_empty() {
                return Err(ApiError::bad("missing required field \"role\""));
            }
            let token = login_field(req, "jwt")?;
            let role: JwtRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(|| ApiError::bad(format!("role {name:?} could not be found")))?;
            let claims = verified_claims(a, m, &cfg, &token).await?;
            let mut rules = role.rules.clone();
            rules.bound_issuer = cfg.bound_issuer.clone();
            rules.require_exp = true;
            let id = jwt::check_claims(&claims, &rules, now_unix())?;
            // Claim mappings first; the role name and the verified issuer are set last so that
            // no claim can stand in for them (PKI `provenance_extensions` copies `issuer`).
            let mut meta = meta_map(id.metadata.iter().map(|(k, v)| (k.as_str(), v.clone())));
            meta.insert("role".into(), json!(name.clone()));
            if let Some(iss) = claims.get("iss").and_then(|v| v.as_str()) {
                meta.insert("issuer".into(), json!(iss));
            }
            Ok(Login {
                params: role.token.clone(),
                display_name: format!("{}-{}", m.kind, id.user),
                meta,
            })
        }
        "kubernetes" => {
            let cfg: KubeConfig = a
                .get_json("config")
                .await?
                .ok_or_else(|| ApiError::bad("this Kubernetes method is not configured yet"))?;
            let name = login_field(req, "role")?;
            let token = login_field(req, "jwt")?;
            let role: KubeRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or_else(|| ApiError::bad(format!("role {name:?} could not be found")))?;
            let sa = if cfg.pem_keys.is_empty() && cfg.jwks_url.is_empty() {
                token_review(&cfg, &token, &role.audience).await?
            } else {
                // Offline: the same verification as the JWT method, with the cluster's keys.
                let keys = JwtConfig {
                    jwt_validation_pubkeys: cfg.pem_keys.clone(),
                    jwks_url: cfg.jwks_url.clone(),
                    ca_pem: cfg.kubernetes_ca_cert.clone(),
                    jwt_supported_algs: ["RS256", "ES256"].iter().map(|s| s.to_string()).collect(),
                    ..JwtConfig::default()
                };
                let claims = verified_claims(a, m, &keys, &token).await?;
                let sa = service_account(&claims)?;
                jwt::check_claims(&claims, &role.claim_rules(&cfg, sa.legacy), now_unix())?;
                sa
            };
            role.check(&sa)?;
            let meta = meta_map([
                ("role", name.clone()),
                ("service_account_name", sa.name.clone()),
                ("service_account_namespace", sa.namespace.clone()),
                ("service_account_uid", sa.uid.clone()),
            ]);
            Ok(Login {
                params: role.token.clone(),
                display_name: format!("kubernetes-{}-{}", sa.namespace, sa.name),
                meta,
            })
        }
        "cert" => cert_login(a, req).await,
        other => Err(ApiError::bad(format!("auth type {other:?} has no login"))),
    }
}

/// Certificate login: the TLS handshake proved the client holds the key of `peer_certs[0]`;
/// a role (`name`, or the first that accepts it, in name order) must trust its issuer and
/// names, and neither it nor its issuer may be revoked (Custos's own PKI mounts, and CRLs
/// uploaded at `crls/:name`).
async fn cert_login(a: &Au<'_>, req: &Request) -> ApiResult<Login> {
    let leaf = req.peer_certs.first().ok_or_else(|| {
        ApiError::bad(
            "no client certificate was presented: certificate login needs a TLS connection \
             with a client certificate (listener tls_client_auth = \"request\")",
        )
    })?;
    let wanted = req.str_field("name").filter(|n| !n.is_empty());
    let names = match &wanted {
        Some(n) => vec![n.clone()],
        None => {
            let mut v: Vec<String> = a
                .list("role/")
                .await?
                .into_iter()
                .filter(|k| !k.contains('/'))
                .collect();
            v.sort();
            v
        }
    };
    let now = now_unix();
    let mut reason = None;
    let mut hit = None;
    for name in names {
        let Some(role) = a.get_json::<CertRole>(&format!("role/{name}")).await? else {
            if wanted.is_some() {
                return Err(ApiError::bad(format!("role {name:?} could not be found")));
            }
            continue;
        };
        match role.check(leaf, now) {
            Ok(c) => {
                hit = Some((name, role, c));
                break;
            }
            Err(e) => reason = Some(e),
        }
    }
    let (name, role, c) = match (hit, reason) {
        (Some(h), _) => h,
        (None, Some(e)) => return Err(e.into()),
        (None, None) => {
            return Err(ApiError::LoginDenied(
                "no certificate role is configured".into(),
            ))
        }
    };
    if let Some(why) = a
        .shared
        .revocation
        .revoked_by_issuer(&c.issuer_der, &c.serial)
        .await?
    {
        return Err(ApiError::LoginDenied(why));
    }
    let serial = custos_pki::issue::serial_hex(&c.serial);
    for crl in a.list("crl/").await? {
        if let Some(l) = a.get_json::<StoredCrl>(&format!("crl/{crl}")).await? {
            if l.issuer == hex::encode(&c.issuer_name) && l.serials.binary_search(&serial).is_ok() {
                return Err(ApiError::LoginDenied(format!(
                    "client certificate {serial} is revoked (CRL {crl:?})"
                )));
            }
        }
    }
    let mut meta = meta_map([
        ("cert_name", name.clone()),
        ("common_name", c.common_name.clone()),
        ("serial_number", serial),
    ]);
    if let Some(id) = c.uris.iter().find_map(|u| u.strip_prefix("urn:uuid:")) {
        meta.insert("nf_instance_id".into(), Value::String(id.to_string()));
    }
    let display = if role.display_name.is_empty() {
        c.common_name.clone()
    } else {
        role.display_name.clone()
    };
    Ok(Login {
        params: role.token.clone(),
        display_name: format!("cert-{display}"),
        meta,
    })
}

/// An uploaded CRL, reduced to what login needs: the issuer's DER name and sorted serials.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCrl {
    issuer: String,
    serials: Vec<String>,
    next_update: i64,
    pem: String,
}

fn parse_crl(req: &Request) -> ApiResult<StoredCrl> {
    use x509_parser::prelude::*;
    let text = login_field(req, "crl")?;
    let der = match x509_parser::pem::parse_x509_pem(text.as_bytes()) {
        Ok((_, p)) if p.label == "X509 CRL" => p.contents,
        _ => return Err(ApiError::bad("crl: not a PEM \"X509 CRL\"")),
    };
    let (rest, crl) = CertificateRevocationList::from_der(&der)
        .map_err(|_| ApiError::bad("crl: not a valid DER certificate revocation list"))?;
    if !rest.is_empty() {
        return Err(ApiError::bad("crl: trailing data after the CRL"));
    }
    let mut serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| custos_pki::issue::serial_hex(r.raw_serial()))
        .collect();
    serials.sort();
    serials.dedup();
    Ok(StoredCrl {
        issuer: hex::encode(crl.tbs_cert_list.issuer.as_raw()),
        serials,
        next_update: crl.next_update().map(|t| t.timestamp()).unwrap_or(0),
        pem: text,
    })
}

/// Asks the Kubernetes API server whether `token` is valid (TokenReview), authenticating as
/// `token_reviewer_jwt`, or as the caller's own token when none is configured (a projected
/// token with the `system:auth-delegator` role can review itself, as with Vault).
async fn token_review(cfg: &KubeConfig, token: &str, audience: &str) -> ApiResult<ServiceAccount> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if !cfg.kubernetes_ca_cert.is_empty() {
        let ca = reqwest::Certificate::from_pem(cfg.kubernetes_ca_cert.as_bytes())
            .map_err(|_| ApiError::bad("kubernetes_ca_cert: not a valid PEM certificate"))?;
        b = b.tls_certs_only([ca]);
    }
    let client = b.build().map_err(ApiError::internal)?;
    let bearer = if cfg.token_reviewer_jwt.is_empty() {
        token
    } else {
        cfg.token_reviewer_jwt.as_str()
    };
    let url = format!(
        "{}/apis/authentication.k8s.io/v1/tokenreviews",
        cfg.kubernetes_host.trim_end_matches('/')
    );
    let unreachable = |e: String| ApiError::LoginDenied(format!("TokenReview at {url}: {e}"));
    let r = client
        .post(&url)
        .bearer_auth(bearer)
        .json(&custos_auth::kube::token_review_request(token, audience))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| unreachable(e.to_string()))?;
    if body.len() > MAX_KEY_DOC {
        return Err(unreachable("answer too large".into()));
    }
    if !status.is_success() {
        return Err(unreachable(format!(
            "HTTP {status} (is the reviewer allowed to create tokenreviews?)"
        )));
    }
    let v: Value =
        serde_json::from_slice(&body).map_err(|_| unreachable("answer is not JSON".into()))?;
    Ok(custos_auth::kube::service_account_from_review(
        &v, audience,
    )?)
}

fn secret_hash(a: &Au<'_>, secret: &str) -> ApiResult<String> {
    a.sys.keyed_hash(secret)
}

/// Role IDs are looked up by a keyed hash too, so storage keys never reveal them.
fn hex_id(role_id: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        role_id.as_bytes(),
    ))
}

fn random_id() -> ApiResult<String> {
    Ok(uuid::Uuid::new_v4().to_string())
}

/// Everything but login: config and roles (token required, ACL applied by the router).
async fn handle(a: &Au<'_>, m: &MountEntry, sub: &str, req: &Request) -> ApiResult<Response> {
    let mut parts: Vec<&str> = sub.split('/').collect();
    if m.kind == "cert" {
        match parts.as_slice() {
            ["certs", ..] => parts[0] = "role",
            ["crls"] => {
                let names = a.list("crl/").await?;
                return if names.is_empty() {
                    Err(ApiError::NotFound)
                } else {
                    Response::list(names)
                };
            }
            ["crls", name] => return crl_op(a, name, req).await,
            _ => {}
        }
    }
    match (parts.as_slice(), req.op) {
        (["config"], Read) => {
            let v = match m.kind.as_str() {
                "kubernetes" => a
                    .get_json::<KubeConfig>("config")
                    .await?
                    .map(|c| c.to_json()),
                _ => a
                    .get_json::<JwtConfig>("config")
                    .await?
                    .map(|c| c.to_json()),
            };
            v.map(Response::data).ok_or(ApiError::NotFound)
        }
        (["config"], _) => {
            let bytes = match m.kind.as_str() {
                "kubernetes" => serde_json::to_vec(&KubeConfig::from_request(&req.data)?)?,
                _ => serde_json::to_vec(&JwtConfig::from_request(&req.data)?)?,
            };
            a.write(vec![Plain::Put("config".to_string(), bytes)])
                .await?;
            forget_keys(a, m);
            Ok(Response::empty())
        }
        (["role"], _) => {
            let names: Vec<String> = a
                .list("role/")
                .await?
                .into_iter()
                .filter(|k| !k.contains('/'))
                .collect();
            if names.is_empty() {
                return Err(ApiError::NotFound);
            }
            Response::list(names)
        }
        (["role", name], Read) => {
            let key = format!("role/{name}");
            let v = match m.kind.as_str() {
                "approle" => a.get_json::<AppRole>(&key).await?.map(|r| r.to_json()),
                "kubernetes" => a.get_json::<KubeRole>(&key).await?.map(|r| r.to_json()),
                "cert" => a.get_json::<CertRole>(&key).await?.map(|r| r.to_json()),
                _ => a.get_json::<JwtRole>(&key).await?.map(|r| r.to_json()),
            };
            v.map(Response::data).ok_or(ApiError::NotFound)
        }
        (["role", name], Delete) => delete_role(a, name).await,
        (["role", name], _) => write_role(a, m, name, &req.data).await,
        (["role", name, "role-id"], Read) => {
            let r: AppRole = a
                .get_json(&format!("role/{name}"))
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(Response::data(json!({"role_id": r.role_id})))
        }
        (["role", name, "role-id"], _) => {
            let mut d = Map::new();
            d.insert(
                "role_id".into(),
                Value::String(login_field(req, "role_id")?),
            );
            write_role(a, m, name, &d).await
        }
        (["role", name, "secret-id"], List | Read) => {
            let keys = a.list(&format!("secret_id_accessor/{name}/")).await?;
            if keys.is_empty() {
                return Err(ApiError::NotFound);
            }
            Response::list(keys)
        }
        (["role", name, "secret-id"], _) => new_secret_id(a, name, req).await,
        (["role", name, "secret-id", op], _) => {
            let secret = login_field(req, "secret_id")?;
            let key = format!("secret_id/{name}/{}", secret_hash(a, &secret)?);
            secret_id_op(a, name, &key, op).await
        }
        (["role", name, "secret-id-accessor", op], _) => {
            let acc = login_field(req, "secret_id_accessor")?;
            valid_id("secret_id_accessor", &acc)?;
            let hash: String = a
                .get_json(&format!("secret_id_accessor/{name}/{acc}"))
                .await?
                .ok_or_else(|| ApiError::bad("unknown secret_id_accessor"))?;
            let key = format!("secret_id/{name}/{hash}");
            secret_id_op(a, name, &key, op).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn crl_op(a: &Au<'_>, name: &str, req: &Request) -> ApiResult<Response> {
    valid_name(name)?;
    let key = format!("crl/{name}");
    match req.op {
        Read => {
            let c: StoredCrl = a.get_json(&key).await?.ok_or(ApiError::NotFound)?;
            Ok(Response::data(json!({
                "crl": c.pem,
                "serials": c.serials,
                "next_update": c.next_update,
            })))
        }
        Delete => {
            a.write(vec![Plain::Delete(key)]).await?;
            Ok(Response::empty())
        }
        _ => {
            if let Some(k) = req.data.keys().find(|k| k.as_str() != "crl") {
                return Err(ApiError::bad(format!("unknown field {k:?}")));
            }
            let c = parse_crl(req)?;
            a.write(vec![Plain::Put(key, serde_json::to_vec(&c)?)])
                .await?;
            Ok(Response::empty())
        }
    }
}

async fn secret_id_op(a: &Au<'_>, name: &str, key: &str, op: &str) -> ApiResult<Response> {
    let Some(s) = a.get_json::<SecretId>(key).await? else {
        return if op == "destroy" {
            Ok(Response::empty())
        } else {
            Err(ApiError::NotFound)
        };
    };
    if op == "lookup" {
        return Ok(Response::data(s.to_json(rfc3339)));
    }
    a.write(vec![
        Plain::Delete(key.to_string()),
        Plain::Delete(format!("secret_id_accessor/{name}/{}", s.accessor)),
    ])
    .await?;
    Ok(Response::empty())
}

async fn write_role(
    a: &Au<'_>,
    m: &MountEntry,
    name: &str,
    data: &Map<String, Value>,
) -> ApiResult<Response> {
    valid_name(name)?;
    let key = format!("role/{name}");
    let bytes;
    let mut ops = Vec::new();
    match m.kind.as_str() {
        "approle" => {
            let old: Option<AppRole> = a.get_json(&key).await?;
            let mut r = match &old {
                Some(r) => r.clone(),
                None => AppRole::new(random_id()?),
            };
            r.update(data)?;
            if old.as_ref().map(|o| &o.role_id) != Some(&r.role_id) {
                let idx = format!("role_id/{}", hex_id(&r.role_id));
                if let Some(owner) = a.get_json::<String>(&idx).await? {
                    if owner != name {
                        return Err(ApiError::bad("role_id: already in use by another role"));
                    }
                }
                if let Some(o) = &old {
                    ops.push(Plain::Delete(format!("role_id/{}", hex_id(&o.role_id))));
                }
                ops.push(Plain::Put(idx, serde_json::to_vec(name)?));
            }
            bytes = serde_json::to_vec(&r)?;
        }
        "kubernetes" => {
            let mut r: KubeRole = a.get_json(&key).await?.unwrap_or_default();
            r.update(data)?;
            bytes = serde_json::to_vec(&r)?;
        }
        "cert" => {
            let mut r: CertRole = a.get_json(&key).await?.unwrap_or_default();
            r.update(data)?;
            bytes = serde_json::to_vec(&r)?;
        }
        _ => {
            let mut r: JwtRole = a.get_json(&key).await?.unwrap_or_default();
            r.update(data, &[])?;
            bytes = serde_json::to_vec(&r)?;
        }
    }
    ops.push(Plain::Put(key, bytes));
    a.write(ops).await?;
    Ok(Response::empty())
}

async fn delete_role(a: &Au<'_>, name: &str) -> ApiResult<Response> {
    let mut ops = vec![Plain::Delete(format!("role/{name}"))];
    if let Some(r) = a
        .get_json::<AppRole>(&format!("role/{name}"))
        .await
        .ok()
        .flatten()
    {
        ops.push(Plain::Delete(format!("role_id/{}", hex_id(&r.role_id))));
    }
    for prefix in [
        format!("secret_id/{name}/"),
        format!("secret_id_accessor/{name}/"),
    ] {
        for k in a.list(&prefix).await? {
            ops.push(Plain::Delete(format!("{prefix}{k}")));
        }
    }
    a.write(ops).await?;
    Ok(Response::empty())
}

async fn new_secret_id(a: &Au<'_>, name: &str, req: &Request) -> ApiResult<Response> {
    let role: AppRole = a
        .get_json(&format!("role/{name}"))
        .await?
        .ok_or_else(|| ApiError::bad(format!("role {name:?} does not exist")))?;
    let accessor = random_id()?;
    let s = SecretId::new(&role, &req.data, accessor.clone(), now_unix())?;
    let secret = zeroize::Zeroizing::new(random_id()?);
    let hash = secret_hash(a, &secret)?;
    a.write(vec![
        Plain::Put(format!("secret_id/{name}/{hash}"), serde_json::to_vec(&s)?),
        Plain::Put(
            format!("secret_id_accessor/{name}/{accessor}"),
            serde_json::to_vec(&hash)?,
        ),
    ])
    .await?;
    Ok(Response::data(json!({
        "secret_id": secret.as_str(),
        "secret_id_accessor": accessor,
        "secret_id_ttl": if s.expiration_time > 0 { s.expiration_time - s.creation_time } else { 0 },
        "secret_id_num_uses": s.num_uses,
    })))
}
