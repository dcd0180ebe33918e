//! Routing and the request pipeline.
//!
//! `dispatch`: route → sealed check → method check → authenticate (token) → existence check
//! (create vs update) → ACL → audit request → count a use → handler → audit response.

use crate::audit_dev::{AuditAuth, AuditEvent};
use crate::core::{now_unix, rfc3339, Active, Core};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use crate::token::{self, TokenEntry};
use custos_acl::Operation::{self, *};
use serde_json::{json, Map, Value};
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Ep {
    Init,
    SealStatus,
    Unseal,
    Seal,
    Health,
    Leader,
    Metrics,
    Mounts,
    Mount(String),
    MountTune(String),
    AuthList,
    Auth(String),
    PoliciesList { legacy: bool },
    Policy { name: String, legacy: bool },
    Rotate,
    KeyStatus,
    AuditList,
    Audit(String),
    AuditHash(String),
    CapabilitiesSelf,
    Capabilities,
    Token(String),
    Kv(MountEntry, String),
    Pki(MountEntry, String),
    Provenance(MountEntry, String),
    AuthMethod(MountEntry, String),
    AuthLogin(MountEntry),
    NrfKeys,
    NrfRotate,
    NrfList,
    NrfInstance(String),
    Tlog(String),
}

struct Endpoint {
    ep: Ep,
    ops: &'static [Operation],
    unauth: bool,
    /// Operations served without a token even though `unauth` is false (PKI reads).
    unauth_ops: &'static [Operation],
    sudo: bool,
    sealed_ok: bool,
    existence: bool,
}

fn ep(ep: Ep, ops: &'static [Operation]) -> Endpoint {
    Endpoint {
        ep,
        ops,
        unauth: false,
        unauth_ops: &[],
        sudo: false,
        sealed_ok: false,
        existence: false,
    }
}

impl Endpoint {
    fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }
    fn open(mut self) -> Self {
        self.unauth = true;
        self
    }
    fn sealed_ok(mut self) -> Self {
        self.sealed_ok = true;
        self
    }
    fn existence(mut self) -> Self {
        self.existence = true;
        self
    }
}

const RW: &[Operation] = &[Read, Create, Update, Delete];

/// Routes that exist whether or not the core is sealed.
fn sys_route(core: &Core, p: &str) -> Option<Endpoint> {
    let seg = |prefix: &str| p.strip_prefix(prefix).filter(|r| !r.is_empty());
    Some(match p {
        "sys/init" => ep(Ep::Init, &[Read, Update]).open().sealed_ok(),
        "sys/seal-status" => ep(Ep::SealStatus, &[Read]).open().sealed_ok(),
        "sys/unseal" => ep(Ep::Unseal, &[Update]).open().sealed_ok(),
        "sys/health" => ep(Ep::Health, &[Read]).open().sealed_ok(),
        "sys/seal" => ep(Ep::Seal, &[Update]).sudo(),
        "sys/leader" => ep(Ep::Leader, &[Read]).open(),
        "sys/metrics" => {
            let e = ep(Ep::Metrics, &[Read]);
            if core.cfg.unauthenticated_metrics_access {
                e.open()
            } else {
                e
            }
        }
        "sys/mounts" => ep(Ep::Mounts, &[Read]),
        "sys/auth" => ep(Ep::AuthList, &[Read]),
        "sys/policies/acl" => ep(Ep::PoliciesList { legacy: false }, &[List, Read]),
        "sys/policy" => ep(Ep::PoliciesList { legacy: true }, &[List, Read]),
        "sys/rotate" => ep(Ep::Rotate, &[Update]).sudo(),
        "sys/key-status" => ep(Ep::KeyStatus, &[Read]),
        "sys/nrf/keys" if core.nrf.get().is_some() => ep(Ep::NrfKeys, &[Read]),
        "sys/nrf/keys/rotate" if core.nrf.get().is_some() => ep(Ep::NrfRotate, &[Update]).sudo(),
        "sys/nrf/nf-instances" if core.nrf.get().is_some() => ep(Ep::NrfList, &[List, Read]),
        "sys/audit" => ep(Ep::AuditList, &[Read]).sudo(),
        "sys/capabilities-self" => ep(Ep::CapabilitiesSelf, &[Update]),
        "sys/capabilities" => ep(Ep::Capabilities, &[Update]),
        _ => {
            if let Some(r) = seg("sys/mounts/") {
                match r.strip_suffix("/tune") {
                    Some(m) => ep(Ep::MountTune(m.into()), &[Read, Update]),
                    None => ep(Ep::Mount(r.into()), &[Read, Update, Delete]),
                }
            } else if let Some(r) = seg("sys/auth/") {
                ep(Ep::Auth(r.into()), &[Update, Delete]).sudo()
            } else if let Some(n) = seg("sys/policies/acl/") {
                ep(
                    Ep::Policy {
                        name: n.into(),
                        legacy: false,
                    },
                    RW,
                )
                .existence()
            } else if let Some(n) = seg("sys/policy/") {
                ep(
                    Ep::Policy {
                        name: n.into(),
                        legacy: true,
                    },
                    RW,
                )
                .existence()
            } else if let Some(d) = seg("sys/audit/") {
                ep(Ep::Audit(d.into()), &[Update, Delete]).sudo()
            } else if let Some(id) =
                seg("sys/nrf/nf-instances/").filter(|_| core.nrf.get().is_some())
            {
                ep(Ep::NrfInstance(id.into()), RW).existence()
            } else if let Some(t) = seg("sys/tlog/").filter(|t| crate::tlog::is_route(t)) {
                ep(Ep::Tlog(t.into()), &[Read]).open()
            } else if let Some(d) = seg("sys/audit-hash/") {
                ep(Ep::AuditHash(d.into()), &[Update]).sudo()
            } else if let Some(t) = seg("auth/token/") {
                token_route(t)?
            } else {
                return None;
            }
        }
    })
}

fn token_route(t: &str) -> Option<Endpoint> {
    let name = t.to_string();
    Some(match t {
        "create" | "create-orphan" | "lookup-accessor" | "renew" | "renew-self"
        | "renew-accessor" | "revoke" | "revoke-self" | "revoke-accessor" => {
            ep(Ep::Token(name), &[Update])
        }
        "lookup" => ep(Ep::Token(name), &[Update, Read]),
        "lookup-self" => ep(Ep::Token(name), &[Read, Update]),
        "revoke-orphan" => ep(Ep::Token(name), &[Update]).sudo(),
        "accessors" => ep(Ep::Token(name), &[List]).sudo(),
        _ => return None,
    })
}

async fn route(core: &Core, path: &str) -> ApiResult<Endpoint> {
    let trimmed = path.trim_end_matches('/');
    if let Some(e) = sys_route(core, trimmed) {
        if !e.sealed_ok && core.sealed() {
            return Err(ApiError::Sealed);
        }
        return Ok(e);
    }
    let a = core.active().ok_or(ApiError::Sealed)?;
    if let Some(rest) = trimmed.strip_prefix("auth/") {
        let t = a.auth_mounts.read().await;
        let m = t
            .find(rest)
            .filter(|m| crate::auth_methods::AUTH_TYPES.contains(&m.kind.as_str()))
            .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
        let sub = rest.strip_prefix(m.path.as_str()).unwrap_or("");
        let r = crate::auth_methods::route(&m.kind, sub)
            .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
        let mut e = if r.login {
            ep(Ep::AuthLogin(m.clone()), r.ops).open()
        } else {
            ep(Ep::AuthMethod(m.clone(), sub.to_string()), r.ops)
        };
        e.existence = false;
        return Ok(e);
    }
    if trimmed == "sys" || trimmed.starts_with("sys/") {
        return Err(ApiError::NoRoute(path.to_string()));
    }
    let mounts = a.mounts.read().await;
    let m = mounts
        .find(path)
        .filter(|m| m.kind == "kv" || m.kind == "pki" || m.kind == "provenance")
        .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
    let key = path.strip_prefix(m.path.as_str()).unwrap_or("").to_string();
    if m.kind == "provenance" {
        let sub = key.trim_end_matches('/').to_string();
        let ops =
            crate::provenance::route(&sub).ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
        return Ok(ep(Ep::Provenance(m.clone(), sub), ops));
    }
    if m.kind == "pki" {
        let sub = key.trim_end_matches('/').to_string();
        let r = crate::pki::route(&sub).ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
        let mut e = ep(Ep::Pki(m.clone(), sub), r.ops);
        e.unauth_ops = r.unauth_ops;
        e.existence = r.existence;
        return Ok(e);
    }
    Ok(ep(
        Ep::Kv(m.clone(), key),
        &[Read, Create, Update, Delete, List],
    )
    .existence())
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Create => "create",
        Read => "read",
        Update => "update",
        Patch => "patch",
        Delete => "delete",
        List => "list",
    }
}

/// The whole pipeline for one request.
pub(crate) async fn dispatch(core: &Arc<Core>, mut req: Request) -> ApiResult<Response> {
    let e = route(core, &req.path).await?;
    if !e.ops.contains(&req.op) {
        return Err(ApiError::MethodNotAllowed);
    }
    if e.unauth || e.unauth_ops.contains(&req.op) {
        return run_unauth(core, &e.ep, &req).await;
    }
    let a = core.active().ok_or(ApiError::Sealed)?;
    let token = req.token.clone().ok_or(ApiError::PermissionDenied(None))?;
    let caller = a
        .lookup_token(&token)
        .await?
        .ok_or(ApiError::PermissionDenied(None))?;
    if !caller.bound_cidrs.is_empty()
        && custos_auth::params::check_source(
            &caller.bound_cidrs,
            req.remote_addr.map(|r| r.ip()),
            "token_bound_cidrs",
        )
        .is_err()
    {
        return Err(ApiError::PermissionDenied(None));
    }
    if req.op == Update && e.existence && !exists(core, &a, &e.ep).await? {
        req.op = Create;
    }
    let acl = a.acl_for(&caller.policies).await?;
    let mut acl_path = req.path.trim_start_matches('/').to_string();
    // As Vault does: a LIST is checked against the path with a trailing slash.
    if req.op == List && !acl_path.ends_with('/') {
        acl_path.push('/');
    }
    let decision = acl.check(&acl_path, req.op, e.sudo, Some(&req.data));
    let auth = AuditAuth {
        token: Some(token.clone()),
        accessor: caller.accessor.clone(),
        display_name: caller.display_name.clone(),
        policies: caller.policies.clone(),
        metadata: caller.meta.clone(),
    };
    let remote = req
        .remote_addr
        .map(|r| r.ip().to_string())
        .unwrap_or_default();
    let mut ev = AuditEvent {
        id: &req.id,
        operation: op_name(req.op),
        path: &req.path,
        data: &req.data,
        remote,
        auth: &auth,
        response: None,
        error: decision.as_ref().err().map(|d| d.to_string()),
    };
    a.audit.log(&ev).await?;
    decision.map_err(|d| ApiError::PermissionDenied(Some(d)))?;
    let last_use = a.use_token(&caller).await?;
    let result = run(core, &a, &caller, &token, &e.ep, &req).await;
    let empty = Response::empty();
    ev.response = Some(result.as_ref().unwrap_or(&empty));
    ev.error = result.as_ref().err().map(|e| e.to_string());
    let logged = a.audit.log(&ev).await;
    if last_use {
        a.revoke_tree(&caller, false).await?;
    }
    logged?;
    result
}

fn nrf(core: &Core) -> ApiResult<&Arc<crate::sbi::Nrf>> {
    core.nrf
        .get()
        .ok_or_else(|| ApiError::NoRoute("sys/nrf".into()))
}

async fn exists(core: &Core, a: &Arc<Active>, e: &Ep) -> ApiResult<bool> {
    match e {
        Ep::Policy { name, .. } => a.policy_exists(&name.to_lowercase()).await,
        Ep::Kv(m, key) if !key.is_empty() => a.kv_exists(m, key).await,
        Ep::Pki(m, sub) => crate::pki::exists(a, m, sub).await,
        Ep::NrfInstance(id) => Ok(nrf(core)?.admin_get(a, id).await?.is_some()),
        _ => Ok(true),
    }
}

fn u8_field(req: &Request, k: &str) -> ApiResult<Option<u8>> {
    match req.data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad(format!("{k}: must be an integer from 0 to 255"))),
    }
}

fn bool_field(req: &Request, k: &str) -> ApiResult<bool> {
    match req.data.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad(format!("{k}: must be a boolean"))),
        _ => Err(ApiError::bad(format!("{k}: must be a boolean"))),
    }
}

/// A login: the request and its outcome (token hashed, failure reason) go to the audit log,
/// failed ones included; credentials in the body are HMACed like every audited string.
async fn audited_login(core: &Arc<Core>, m: &MountEntry, req: &Request) -> ApiResult<Response> {
    let a = core.active().ok_or(ApiError::Sealed)?;
    // Throttled before any work (signature checks, key fetches, audit writes) is spent.
    core.login_limiter
        .take(&crate::auth_methods::limit_key(m, req))
        .map_err(ApiError::RateLimited)?;
    let auth = AuditAuth {
        token: None,
        accessor: String::new(),
        display_name: String::new(),
        policies: Vec::new(),
        metadata: Map::new(),
    };
    let mut ev = AuditEvent {
        id: &req.id,
        operation: op_name(req.op),
        path: &req.path,
        data: &req.data,
        remote: req
            .remote_addr
            .map(|r| r.ip().to_string())
            .unwrap_or_default(),
        auth: &auth,
        response: None,
        error: None,
    };
    a.audit.log(&ev).await?;
    let result = crate::auth_methods::login(core, &a, m, req).await;
    if let Err(e) = &result {
        tracing::info!(mount = %m.path, error = %e, "login refused");
    }
    let empty = Response::empty();
    ev.response = Some(result.as_ref().unwrap_or(&empty));
    ev.error = result.as_ref().err().map(|e| e.to_string());
    a.audit.log(&ev).await?;
    result
}

async fn run_unauth(core: &Arc<Core>, e: &Ep, req: &Request) -> ApiResult<Response> {
    match e {
        Ep::Init if req.op == Read => {
            Ok(Response::bare(json!({"initialized": core.initialized()})))
        }
        Ep::Init => {
            for unsupported in ["pgp_keys", "root_token_pgp_key"] {
                if req.data.get(unsupported).is_some_and(|v| !v.is_null()) {
                    return Err(ApiError::bad(format!(
                        "{unsupported}: PGP-encrypted shares are not supported"
                    )));
                }
            }
            let keyfile = matches!(core.cfg.seal, crate::config::SealConfig::Keyfile { .. });
            let (n, t) = if keyfile {
                (1, 1)
            } else {
                let n = u8_field(req, "secret_shares")?
                    .ok_or_else(|| ApiError::bad("missing required field \"secret_shares\""))?;
                let t = u8_field(req, "secret_threshold")?
                    .ok_or_else(|| ApiError::bad("missing required field \"secret_threshold\""))?;
                (n, t)
            };
            let r = core.init(n, t, None).await?;
            if keyfile {
                core.auto_unseal().await?;
            }
            let keys: Vec<String> = r.keys.iter().map(hex::encode).collect();
            let keys_b64: Vec<String> = r
                .keys
                .iter()
                .map(|k| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(&k[..])
                })
                .collect();
            Ok(Response::bare(json!({
                "keys": keys,
                "keys_base64": keys_b64,
                "root_token": r.root_token.as_str(),
            })))
        }
        Ep::SealStatus => Ok(Response::bare(core.seal_status().await)),
        Ep::Unseal => {
            let reset = bool_field(req, "reset")?;
            let key = req.str_field("key");
            core.submit_unseal_share(key.as_deref(), reset).await?;
            Ok(Response::bare(core.seal_status().await))
        }
        Ep::Health => health(core, req),
        Ep::Leader => Ok(Response::bare(json!({
            "ha_enabled": false,
            "is_self": true,
            "active_time": rfc3339(core.started),
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }))),
        Ep::Metrics => metrics(core, req).await,
        Ep::Pki(m, sub) => {
            let a = core.active().ok_or(ApiError::Sealed)?;
            crate::pki::handle(core, &a, m, sub, req, None).await
        }
        Ep::AuthLogin(m) => audited_login(core, m, req).await,
        Ep::Tlog(sub) => {
            let a = core.active().ok_or(ApiError::Sealed)?;
            crate::tlog::handle(&a, sub, req).await
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn health(core: &Core, req: &Request) -> ApiResult<Response> {
    let code = |k: &str, default: u16| -> ApiResult<u16> {
        match req.data.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse::<u16>().ok())
                .or_else(|| v.as_u64().and_then(|n| u16::try_from(n).ok()))
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| ApiError::bad(format!("{k}: must be an HTTP status code"))),
        }
    };
    let initialized = core.initialized();
    let sealed = core.sealed();
    let status = if !initialized {
        code("uninitcode", 501)?
    } else if sealed {
        code("sealedcode", 503)?
    } else {
        code("activecode", 200)?
    };
    // Validate the standby-related parameters even though this node is never a standby.
    for k in ["standbycode", "drsecondarycode", "performancestandbycode"] {
        code(k, 200)?;
    }
    let mut r = Response::bare(json!({
        "initialized": initialized,
        "sealed": sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": now_unix(),
        "version": crate::VERSION,
        "cluster_name": core.cfg.cluster_name,
        "cluster_id": "",
    }));
    r.status = Some(status);
    Ok(r)
}

async fn metrics(core: &Core, req: &Request) -> ApiResult<Response> {
    match req.data.get("format").and_then(Value::as_str) {
        Some("prometheus") => {}
        other => {
            return Err(ApiError::bad(format!(
                "format {:?} is not supported; use format=prometheus",
                other.unwrap_or("")
            )))
        }
    }
    let stats = core.store.stats();
    let text = core.metrics.render(&[
        (
            "custos_core_unsealed",
            "1 if unsealed.",
            if core.sealed() { 0.0 } else { 1.0 },
        ),
        (
            "custos_store_transactions_total",
            "Storage transactions committed.",
            stats.transactions as f64,
        ),
        (
            "custos_store_writes_total",
            "Storage writes acknowledged (group-committed).",
            stats.writes as f64,
        ),
    ]);
    Ok(Response {
        raw: Some(("text/plain; version=0.0.4", text.into_bytes())),
        ..Default::default()
    })
}

async fn run(
    core: &Arc<Core>,
    a: &Arc<Active>,
    caller: &TokenEntry,
    caller_token: &str,
    e: &Ep,
    req: &Request,
) -> ApiResult<Response> {
    match e {
        Ep::Seal => {
            core.seal()?;
            Ok(Response::empty())
        }
        Ep::Mounts => {
            let m = a.mounts.read().await.describe();
            Ok(with_top_level(Response::data(Value::Object(m))))
        }
        Ep::Mount(p) => match req.op {
            Read => {
                let path = crate::mounts::normalize_mount_path(p)?;
                let t = a.mounts.read().await;
                let m = t
                    .entries
                    .iter()
                    .find(|m| m.path == path)
                    .ok_or(ApiError::NotFound)?;
                Ok(Response::data(crate::mounts::describe_entry(m)))
            }
            Delete => a.disable_mount(p).await,
            _ => a.enable_mount(p, req).await,
        },
        Ep::MountTune(p) => a.tune_mount(p, req).await,
        Ep::AuthMethod(m, sub) => crate::auth_methods::handle(a, m, sub, req).await,
        Ep::AuthList => {
            let m = a.auth_mounts.read().await.describe();
            Ok(with_top_level(Response::data(Value::Object(m))))
        }
        Ep::Auth(p) => {
            let path = crate::mounts::normalize_mount_path(p)?;
            if path == "token/" {
                return Err(ApiError::bad(
                    "the token auth method is built in and cannot be enabled or disabled",
                ));
            }
            if req.op == Delete {
                return a.disable_auth(p).await;
            }
            a.enable_auth(p, req).await
        }
        Ep::PoliciesList { legacy } => {
            let names = a.list_policies().await?;
            if *legacy {
                Ok(with_top_level(Response::data(
                    json!({"policies": names, "keys": names}),
                )))
            } else {
                Response::list(names)
            }
        }
        Ep::Policy { name, legacy } => {
            let r = match req.op {
                Read => a.read_policy(name).await?,
                Delete => a.delete_policy(name, &caller.display_name).await?,
                _ => {
                    let field = if *legacy && req.data.contains_key("rules") {
                        "rules"
                    } else {
                        "policy"
                    };
                    let text = req.data.get(field).and_then(Value::as_str);
                    a.write_policy(name, text, &caller.display_name).await?
                }
            };
            Ok(if *legacy { with_top_level(r) } else { r })
        }
        Ep::Rotate => {
            let s = a.rotate().await?;
            tracing::info!(term = s.term, "barrier key rotated");
            Ok(Response::empty())
        }
        Ep::NrfKeys => Ok(Response::data(nrf(core)?.key_status())),
        Ep::NrfRotate => Ok(Response::data(nrf(core)?.rotate_key(a).await?)),
        Ep::NrfList => Response::list(nrf(core)?.admin_list(a).await?),
        Ep::NrfInstance(id) => {
            let n = nrf(core)?;
            match req.op {
                Read => n
                    .admin_get(a, id)
                    .await?
                    .map(Response::data)
                    .ok_or(ApiError::NotFound),
                Create | Update => {
                    let (replaced, doc) =
                        n.admin_put(a, id, Value::Object(req.data.clone())).await?;
                    tracing::info!(nf = %id, replaced, by = %caller.display_name, "NF profile written through the management API");
                    Ok(Response::data(doc))
                }
                Delete => {
                    if n.admin_delete(a, id).await? {
                        tracing::info!(nf = %id, by = %caller.display_name, "NF profile deleted through the management API");
                    }
                    Ok(Response::empty())
                }
                _ => Err(ApiError::MethodNotAllowed),
            }
        }
        Ep::KeyStatus => {
            let s = a.key_status()?;
            Ok(with_top_level(Response::data(json!({
                "term": s.term,
                "install_time": rfc3339(s.install_time),
                "encryptions": Value::Null,
            }))))
        }
        Ep::AuditList => Ok(with_top_level(Response::data(Value::Object(
            a.audit.list().await,
        )))),
        Ep::Audit(p) => match req.op {
            Delete => a.audit.disable(a, p).await,
            _ => a.audit.enable(a, p, &req.data).await,
        },
        Ep::AuditHash(p) => {
            let input = req
                .str_field("input")
                .ok_or_else(|| ApiError::bad("missing required field \"input\""))?;
            Ok(Response::data(
                json!({"hash": a.audit.hash(p, &input).await?}),
            ))
        }
        Ep::CapabilitiesSelf | Ep::Capabilities => {
            let acl = if matches!(e, Ep::Capabilities) {
                let t = req
                    .str_field("token")
                    .ok_or_else(|| ApiError::bad("missing required field \"token\""))?;
                let te = a
                    .lookup_token(&t)
                    .await?
                    .ok_or_else(|| ApiError::bad("bad token"))?;
                a.acl_for(&te.policies).await?
            } else {
                a.acl_for(&caller.policies).await?
            };
            let paths: Vec<String> = match (req.data.get("paths"), req.data.get("path")) {
                (Some(Value::Array(p)), _) => p
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                    s.split(',').map(|x| x.trim().to_string()).collect()
                }
                _ => return Err(ApiError::bad("missing required field \"paths\"")),
            };
            let mut m = Map::new();
            let mut all = Vec::new();
            for p in &paths {
                let caps = acl.capabilities(p.trim_start_matches('/'));
                all.extend(caps.iter().map(|s| s.to_string()));
                m.insert(p.clone(), json!(caps));
            }
            all.sort();
            all.dedup();
            m.insert("capabilities".into(), json!(all));
            Ok(with_top_level(Response::data(Value::Object(m))))
        }
        Ep::Token(which) => match which.as_str() {
            "create" => token::create(core, a, caller, req, false).await,
            "create-orphan" => token::create(core, a, caller, req, true).await,
            "lookup" | "lookup-self" | "lookup-accessor" => {
                token::lookup(a, req, caller, caller_token, which).await
            }
            "renew" | "renew-self" | "renew-accessor" => {
                token::renew(core, a, req, caller, caller_token, which).await
            }
            "accessors" => token::list_accessors(a).await,
            _ => token::revoke(a, req, caller, which).await,
        },
        Ep::Kv(m, key) => a.kv(m, key, req).await,
        Ep::Pki(m, sub) => crate::pki::handle(core, a, m, sub, req, Some(caller)).await,
        Ep::Provenance(m, sub) => {
            crate::provenance::handle(a, m, sub, req, &caller.display_name).await
        }
        Ep::Init
        | Ep::SealStatus
        | Ep::Unseal
        | Ep::Health
        | Ep::Leader
        | Ep::Metrics
        | Ep::Tlog(_)
        | Ep::AuthLogin(_) => run_unauth(core, e, req).await,
    }
}

/// Vault repeats the `data` fields of some sys endpoints at the top level for old clients.
fn with_top_level(mut r: Response) -> Response {
    r.top_level = true;
    r
}
