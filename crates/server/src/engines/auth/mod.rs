//! Login methods mounted at `auth/<path>/` (`sys/auth/<path>` with a type): `approle`,
//! `jwt` (and `oidc`, the same method with discovery), and `kubernetes` with offline
//! validation. The decisions are made by `custos-auth`; this module stores roles, fetches
//! and caches keys, audits logins and mints tokens.
//!
//! Storage, all inside the barrier, under `auth/<mount uuid>/`: `config`, `role/<name>`,
//! and for AppRole `role_id/<role id>` (→ role name), `secret_id/<role>/<hmac>` and
//! `secret_id_accessor/<role>/<accessor>` (→ hmac). Secret IDs themselves are never stored.

mod login;

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
use login::*;
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

fn login_field(req: &Request, k: &str) -> ApiResult<String> {
    match req.data.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::bad(format!("missing required field {k:?}"))),
        Some(Value::String(_)) => Err(ApiError::bad(format!("{k}: must not be empty"))),
        Some(_) => Err(ApiError::bad(format!("{k}: must be a string"))),
    }
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
