//! Routing and the request pipeline.
//!
//! `dispatch`: route → sealed check → method check → authenticate (token) → existence check
//! (create vs update) → ACL → audit request → count a use → handler → audit response.

use crate::audit_dev::{AuditAuth, AuditEvent};
use crate::core::engine::{Ctx, PathSpec, Table};
use crate::core::{Active, Core};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::mounts::MountEntry;
use crate::token::TokenEntry;
use custos_acl::Operation::{self, *};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A request for an engine: which registered engine, on which mount, at which sub-path.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index into the registry (and `Core::sys`).
    pub(crate) engine: usize,
    pub(crate) mount: MountEntry,
    pub(crate) sub: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Ep {
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
    PoliciesList {
        legacy: bool,
    },
    Policy {
        name: String,
        legacy: bool,
    },
    Rotate,
    KeyStatus,
    AuditList,
    Audit(String),
    AuditHash(String),
    CapabilitiesSelf,
    Capabilities,
    Token(String),
    /// A path of a mounted engine.
    Engine(Target),
    /// A login path of a login method.
    Login(Target),
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
            } else if let Some(d) = seg("sys/audit-hash/") {
                ep(Ep::AuditHash(d.into()), &[Update]).sudo()
            } else if let Some(t) = seg("auth/token/") {
                token_route(t)?
            } else {
                return system_route(core, p);
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
            .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
        let sub = rest.strip_prefix(m.path.as_str()).unwrap_or("");
        return engine_route(core, Table::Auth, m, sub, path);
    }
    if trimmed == "sys" || trimmed.starts_with("sys/") {
        return Err(ApiError::NoRoute(path.to_string()));
    }
    let mounts = a.mounts.read().await;
    let m = mounts
        .find(path)
        .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
    let sub = path.strip_prefix(m.path.as_str()).unwrap_or("");
    engine_route(core, Table::Secrets, m, sub, path)
}

/// The endpoint of `sub` below the mount `m`, as its engine declares it.
fn engine_route(
    core: &Core,
    table: Table,
    m: &MountEntry,
    sub: &str,
    path: &str,
) -> ApiResult<Endpoint> {
    let idx = core
        .registry
        .index(table, &m.kind)
        .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
    // A secrets engine sees the path as sent (a trailing `/` names a folder to KV).
    let sub = sub.to_string();
    let spec = core.registry.engines[idx]
        .engine
        .route(&sub)
        .ok_or_else(|| ApiError::NoRoute(path.to_string()))?;
    Ok(endpoint(spec, idx, m.clone(), sub))
}

fn endpoint(spec: PathSpec, engine: usize, mount: MountEntry, sub: String) -> Endpoint {
    let t = Target { engine, mount, sub };
    Endpoint {
        ep: if spec.login {
            Ep::Login(t)
        } else {
            Ep::Engine(t)
        },
        ops: spec.ops,
        unauth: spec.login,
        unauth_ops: spec.unauth_ops,
        sudo: spec.sudo,
        sealed_ok: false,
        existence: spec.existence && !spec.login,
    }
}

/// A path of a system engine (`sys/<prefix>…`), when one is registered for it.
fn system_route(core: &Core, p: &str) -> Option<Endpoint> {
    let rest = p.strip_prefix("sys/")?;
    core.registry
        .engines
        .iter()
        .enumerate()
        .filter(|(_, r)| r.table == Table::System)
        .find_map(|(i, r)| {
            let prefix = r.prefix.trim_end_matches('/');
            let sub = rest.strip_prefix(prefix)?;
            let sub = if sub.is_empty() {
                ""
            } else {
                sub.strip_prefix('/')?
            };
            let spec = r.engine.route(sub)?;
            Some(endpoint(spec, i, system_mount(r), sub.to_string()))
        })
}

/// The fixed mount entry a system engine's requests carry.
fn system_mount(r: &crate::core::engine::Registered) -> MountEntry {
    MountEntry {
        path: format!("sys/{}", r.prefix),
        kind: r.kind.to_string(),
        description: String::new(),
        uuid: String::new(),
        accessor: String::new(),
        config: Default::default(),
        options: Map::new(),
    }
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
        return match &e.ep {
            Ep::Engine(t) => run_engine(core, t, &req, None).await,
            Ep::Login(t) => audited_login(core, t, &req).await,
            ep => crate::core::sys::run_unauth(core, ep, &req).await,
        };
    }
    let a = core.active().ok_or(ApiError::Sealed)?;
    let token = req.token.clone().ok_or(ApiError::NoToken)?;
    let caller = a
        .lookup_token(&token)
        .await?
        .ok_or(ApiError::UnknownToken)?;
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
    if req.op == Update && e.existence && !exists(core, &a, &e.ep, &caller).await? {
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
    decision.map_err(|d| match d {
        custos_acl::Denial::Capability => ApiError::NotGranted {
            op: op_name(req.op),
            path: req.path.clone(),
        },
        d => ApiError::PermissionDenied(Some(d)),
    })?;
    let last_use = a.use_token(&caller).await?;
    let result = match &e.ep {
        Ep::Engine(t) => run_engine(core, t, &req, Some(&caller)).await,
        ep => crate::core::sys::run(core, &a, &caller, &token, ep, &req).await,
    };
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

async fn exists(core: &Core, a: &Arc<Active>, e: &Ep, caller: &TokenEntry) -> ApiResult<bool> {
    match e {
        Ep::Policy { name, .. } => a.policy_exists(&name.to_lowercase()).await,
        Ep::Engine(t) => {
            let (r, sys) = engine_of(core, t)?;
            r.engine
                .exists(&ctx_of(t, sys, r.table, Some(caller))?)
                .await
        }
        _ => Ok(true),
    }
}

fn engine_of<'c>(
    core: &'c Core,
    t: &Target,
) -> ApiResult<(
    &'c crate::core::engine::Registered,
    &'c crate::core::engine::Sys,
)> {
    match (core.registry.engines.get(t.engine), core.sys.get(t.engine)) {
        (Some(r), Some(s)) => Ok((r, s)),
        _ => Err(ApiError::NoRoute(t.mount.path.clone())),
    }
}

/// What the engine of `t` sees of one request.
fn ctx_of<'a>(
    t: &'a Target,
    sys: &'a crate::core::engine::Sys,
    table: Table,
    caller: Option<&'a TokenEntry>,
) -> ApiResult<Ctx<'a>> {
    Ok(Ctx {
        mount: &t.mount,
        sub: &t.sub,
        view: if table == Table::System {
            sys.root_view()?
        } else {
            sys.view(&t.mount)?
        },
        sys,
        caller: caller.map(crate::core::engine::Caller::of),
    })
}

/// Runs an engine's handler for one request.
async fn run_engine(
    core: &Core,
    t: &Target,
    req: &Request,
    caller: Option<&TokenEntry>,
) -> ApiResult<Response> {
    let (r, sys) = engine_of(core, t)?;
    r.engine
        .handle(&ctx_of(t, sys, r.table, caller)?, req)
        .await
}

/// Why a login that succeeded must still be refused: the identity belongs to a quarantined
/// device (its certificate's NF instance ID or serial, or the token's display name).
fn login_quarantined(core: &Core, l: &crate::core::engine::Login) -> Option<String> {
    let nf = l.meta.get("nf_instance_id").and_then(Value::as_str);
    let ids: Vec<&str> = nf.into_iter().collect();
    core.registry
        .quarantine
        .refusal(&crate::core::services::Subject {
            nf_instance_ids: &ids,
            cert_serial: l.meta.get("serial_number").and_then(Value::as_str),
            display_name: Some(&l.display_name),
        })
}

/// A login: the request and its outcome (token hashed, failure reason) go to the audit log,
/// failed ones included; credentials in the body are HMACed like every audited string.
async fn audited_login(core: &Arc<Core>, t: &Target, req: &Request) -> ApiResult<Response> {
    let a = core.active().ok_or(ApiError::Sealed)?;
    let (r, sys) = engine_of(core, t)?;
    let m = &t.mount;
    // Throttled before any work (signature checks, key fetches, audit writes) is spent. The
    // bucket: mount, role (bounded: a hostile role field cannot grow the key) and source.
    let role: String = r.engine.login_bucket(m, req).chars().take(128).collect();
    let src = req
        .remote_addr
        .map(|r| r.ip().to_string())
        .unwrap_or_default();
    core.login_limiter
        .take(&format!("{}/{role}/{src}", m.uuid))
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
    let result = match r.engine.login(&ctx_of(t, sys, r.table, None)?, req).await {
        Ok(l) => match login_quarantined(core, &l) {
            Some(why) => Err(ApiError::Quarantined(why)),
            None => {
                let path = format!("auth/{}login", m.path);
                crate::token::login_token(core, &a, &path, &l.params, &l.display_name, l.meta).await
            }
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::info!(mount = %m.path, error = %e, "login refused");
    }
    let empty = Response::empty();
    ev.response = Some(result.as_ref().unwrap_or(&empty));
    ev.error = result.as_ref().err().map(|e| e.to_string());
    a.audit.log(&ev).await?;
    result
}
