//! The core's own `sys/` endpoints (init, seal, health, mounts, auth, policies, audit,
//! capabilities, tokens): what `router::dispatch` runs for the endpoints no engine owns.

use crate::core::router::Ep;
use crate::core::{now_unix, rfc3339, Active, Core};
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use crate::token::{self, TokenEntry};
use custos_acl::Operation::*;
use serde_json::{json, Map, Value};
use std::sync::Arc;

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

pub(crate) async fn run_unauth(core: &Arc<Core>, e: &Ep, req: &Request) -> ApiResult<Response> {
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
    // Engines that serve something of their own (the NRF's SBI listener) report whether it
    // is ready and, if not, which setting is missing. Informational: the status code is
    // Vault's, so load balancers keep their meaning of it.
    let mut engines = Map::new();
    for r in &core.registry.engines {
        if let Some((ready, reason)) = r.engine.readiness() {
            let mut e = Map::new();
            e.insert("ready".into(), json!(ready));
            if !ready {
                e.insert("reason".into(), json!(reason));
            }
            engines.insert(r.kind.to_string(), Value::Object(e));
        }
    }
    if !engines.is_empty() {
        if let Some(d) = r.data.as_mut() {
            d.insert("engines".into(), Value::Object(engines));
        }
    }
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
    let mut text = core.metrics.render(&[
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
    for r in &core.registry.engines {
        text.push_str(&r.engine.metrics());
    }
    Ok(Response {
        raw: Some(("text/plain; version=0.0.4", text.into_bytes().into())),
        ..Default::default()
    })
}

pub(crate) async fn run(
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
            Delete => core.disable_mount(a, p).await,
            _ => core.enable_mount(a, p, req).await,
        },
        Ep::MountTune(p) => a.tune_mount(p, req).await,
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
                return core.disable_auth(a, p).await;
            }
            core.enable_auth(a, p, req).await
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
        Ep::Init
        | Ep::SealStatus
        | Ep::Unseal
        | Ep::Health
        | Ep::Leader
        | Ep::Metrics
        | Ep::Engine(_)
        | Ep::Login(_) => run_unauth(core, e, req).await,
    }
}

/// Vault repeats the `data` fields of some sys endpoints at the top level for old clients.
fn with_top_level(mut r: Response) -> Response {
    r.top_level = true;
    r
}
