//! Mount tables (`sys/mounts`, `sys/auth`) and the KV version 1 secrets engine.

use crate::core::engine::Table;
use crate::core::{Active, Core, Plain};
use crate::duration::duration_value;
use crate::error::{ApiError, ApiResult};
use crate::logical::{Request, Response};
use custos_acl::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Storage key of the secrets mount table.
pub const MOUNTS_PATH: &str = "core/mounts";
/// Storage key of the auth mount table.
pub const AUTH_PATH: &str = "core/auth";
/// Paths that can never be mounted over.
const RESERVED: &[&str] = &["sys/", "auth/", "cubbyhole/", "identity/"];

/// Tunable mount settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MountConfig {
    /// Seconds; 0 = system default.
    #[serde(default)]
    pub default_lease_ttl: u64,
    /// Seconds; 0 = system default.
    #[serde(default)]
    pub max_lease_ttl: u64,
}

/// One mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountEntry {
    /// Path with trailing `/`.
    pub path: String,
    /// Engine type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: String,
    /// Stable id; data lives under `logical/<uuid>/`.
    pub uuid: String,
    /// Accessor.
    pub accessor: String,
    /// Tunables.
    pub config: MountConfig,
    /// Engine options.
    pub options: Map<String, Value>,
}

/// A mount table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct MountTable {
    /// Entries.
    pub entries: Vec<MountEntry>,
}

fn entry(path: &str, kind: &str, description: &str) -> MountEntry {
    let id = uuid::Uuid::new_v4().to_string();
    MountEntry {
        path: path.into(),
        kind: kind.into(),
        description: description.into(),
        accessor: format!("{kind}_{}", &id[..8]),
        uuid: id,
        config: MountConfig::default(),
        options: Map::new(),
    }
}

impl MountTable {
    /// The built-in secrets mounts.
    pub fn default_secrets() -> Self {
        MountTable {
            entries: vec![entry(
                "sys/",
                "system",
                "system endpoints used for control, policy and debugging",
            )],
        }
    }

    /// The built-in auth mounts.
    pub fn default_auth() -> Self {
        MountTable {
            entries: vec![entry("token/", "token", "token based credentials")],
        }
    }

    /// The longest mount whose path prefixes `path`.
    pub fn find(&self, path: &str) -> Option<&MountEntry> {
        self.entries
            .iter()
            .filter(|e| path.starts_with(&e.path) || format!("{path}/") == e.path)
            .max_by_key(|e| e.path.len())
    }

    /// The JSON for `GET sys/mounts` / `sys/auth`.
    pub fn describe(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for e in &self.entries {
            m.insert(e.path.clone(), describe_entry(e));
        }
        m
    }
}

pub(crate) fn describe_entry(e: &MountEntry) -> Value {
    json!({
        "type": e.kind,
        "description": e.description,
        "accessor": e.accessor,
        "uuid": e.uuid,
        "config": {
            "default_lease_ttl": e.config.default_lease_ttl,
            "max_lease_ttl": e.config.max_lease_ttl,
            "force_no_cache": false,
        },
        "options": if e.options.is_empty() { Value::Null } else { Value::Object(e.options.clone()) },
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
    })
}

/// Normalises a mount path: no leading `/`, exactly one trailing `/`, sane characters.
pub fn normalize_mount_path(p: &str) -> ApiResult<String> {
    let p = p.trim_matches('/');
    if p.is_empty() || p.len() > 200 {
        return Err(ApiError::bad("mount path must be 1 to 200 characters"));
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(ApiError::bad(
            "mount path has an empty, '.' or '..' segment",
        ));
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(ApiError::bad(
            "mount path may only contain letters, digits, '-', '_', '.' and '/'",
        ));
    }
    Ok(format!("{p}/"))
}

fn parse_config(v: Option<&Value>) -> ApiResult<MountConfig> {
    let mut c = MountConfig::default();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(c);
    };
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad("config: must be an object"));
    };
    for (k, val) in obj {
        match k.as_str() {
            "default_lease_ttl" => {
                c.default_lease_ttl =
                    duration_value(val).map_err(|e| ApiError::bad(format!("config.{k}: {e}")))?
            }
            "max_lease_ttl" => {
                c.max_lease_ttl =
                    duration_value(val).map_err(|e| ApiError::bad(format!("config.{k}: {e}")))?
            }
            "force_no_cache"
            | "audit_non_hmac_request_keys"
            | "audit_non_hmac_response_keys"
            | "listing_visibility"
            | "passthrough_request_headers"
            | "allowed_response_headers" => {}
            other => return Err(ApiError::bad(format!("config: unknown setting {other:?}"))),
        }
    }
    Ok(c)
}

impl Core {
    /// `POST sys/mounts/<path>`.
    pub(crate) async fn enable_mount(
        &self,
        a: &Active,
        path: &str,
        req: &Request,
    ) -> ApiResult<Response> {
        let path = normalize_mount_path(path)?;
        if RESERVED.iter().any(|r| path.starts_with(r)) {
            return Err(ApiError::bad(format!(
                "cannot mount at reserved path {path:?}"
            )));
        }
        let kind = req
            .str_field("type")
            .ok_or_else(|| ApiError::bad("missing required field \"type\""))?;
        let Some(engine) = self.registry.find(Table::Secrets, &kind) else {
            return Err(ApiError::bad(format!(
                "secrets engine type {kind:?} is not available in this build (available: {})",
                self.registry.kinds(Table::Secrets).join(", ")
            )));
        };
        let mut e = entry(
            &path,
            &kind,
            &req.str_field("description").unwrap_or_default(),
        );
        e.config = parse_config(req.data.get("config"))?;
        if let Some(o) = req.data.get("options").filter(|o| !o.is_null()) {
            e.options = engine.engine.mount_options(o)?;
        }
        self.mounted(a, Table::Secrets, e, "").await
    }

    /// `POST sys/auth/<path> {type}`: enables a login method.
    pub(crate) async fn enable_auth(
        &self,
        a: &Active,
        path: &str,
        req: &Request,
    ) -> ApiResult<Response> {
        let path = normalize_mount_path(path)?;
        let kind = req
            .str_field("type")
            .ok_or_else(|| ApiError::bad("missing required field \"type\""))?;
        if self.registry.find(Table::Auth, &kind).is_none() {
            return Err(ApiError::bad(format!(
                "auth method type {kind:?} is not available in this build (available: {})",
                self.registry.kinds(Table::Auth).join(", ")
            )));
        }
        let mut e = entry(
            &path,
            &kind,
            &req.str_field("description").unwrap_or_default(),
        );
        e.config = parse_config(req.data.get("config"))?;
        self.mounted(a, Table::Auth, e, "auth/").await
    }

    /// Stores the new mount `e`, then runs its engine's mount hook; a failing hook undoes it.
    async fn mounted(
        &self,
        a: &Active,
        table: Table,
        e: MountEntry,
        shown_prefix: &str,
    ) -> ApiResult<Response> {
        let (lock, key) = a.table(table);
        let path = e.path.clone();
        let kind = e.kind.clone();
        a.add_mount(lock, key, e.clone(), shown_prefix).await?;
        if let Some(i) = self.registry.index(table, &kind) {
            if let Err(err) = self.registry.engines[i]
                .engine
                .mount(&self.sys[i], &e)
                .await
            {
                tracing::warn!(mount = %path, error = %err, "engine refused the new mount; undone");
                self.unmount(a, table, &path).await?;
                return Err(err);
            }
        }
        Ok(Response::empty())
    }

    /// `DELETE sys/auth/<path>`: removes the login method, its config and roles. Tokens it
    /// issued stay valid until they expire or are revoked.
    pub(crate) async fn disable_auth(&self, a: &Active, path: &str) -> ApiResult<Response> {
        let path = normalize_mount_path(path)?;
        self.unmount(a, Table::Auth, &path).await
    }

    /// `DELETE sys/mounts/<path>`: removes the mount and all of its data.
    pub(crate) async fn disable_mount(&self, a: &Active, path: &str) -> ApiResult<Response> {
        let path = normalize_mount_path(path)?;
        if path == "sys/" {
            return Err(ApiError::bad("cannot unmount \"sys/\""));
        }
        self.unmount(a, Table::Secrets, &path).await
    }

    /// Removes a mount: its engine's unmount hook first (rows outside the view, caches),
    /// then the table entry and every entry under the mount's view, in one write.
    async fn unmount(&self, a: &Active, table: Table, path: &str) -> ApiResult<Response> {
        let (lock, key) = a.table(table);
        let mut t = lock.write().await;
        let Some(e) = t.entries.iter().find(|x| x.path == path).cloned() else {
            return Ok(Response::empty());
        };
        let mut next = t.clone();
        next.entries.retain(|x| x.path != path);
        let mut ops = vec![Plain::Put(key.into(), serde_json::to_vec(&next)?)];
        if let Some(i) = self.registry.index(table, &e.kind) {
            let (r, sys) = (&self.registry.engines[i], &self.sys[i]);
            r.engine.unmount(sys, &e).await?;
            let prefix = format!("{}{}/", r.engine.storage_root(), e.uuid);
            for k in a.list_all(&prefix).await? {
                ops.push(Plain::Delete(k));
            }
        }
        a.write(ops).await?;
        *t = next;
        Ok(Response::empty())
    }
}

impl Active {
    /// A mount table and its storage key.
    fn table(&self, table: Table) -> (&tokio::sync::RwLock<MountTable>, &'static str) {
        match table {
            Table::Auth => (&self.auth_mounts, AUTH_PATH),
            _ => (&self.mounts, MOUNTS_PATH),
        }
    }

    /// Adds `e` to a mount table unless its path overlaps another mount; the table is
    /// persisted before the in-memory copy changes.
    async fn add_mount(
        &self,
        table: &tokio::sync::RwLock<MountTable>,
        key: &str,
        e: MountEntry,
        shown_prefix: &str,
    ) -> ApiResult<Response> {
        let path = e.path.clone();
        let mut table = table.write().await;
        if table
            .entries
            .iter()
            .any(|x| x.path.starts_with(&path) || path.starts_with(&x.path))
        {
            return Err(ApiError::bad(format!(
                "path is already in use at {shown_prefix}{path} or conflicts with an existing mount"
            )));
        }
        let mut next = table.clone();
        next.entries.push(e);
        self.write(vec![Plain::Put(key.into(), serde_json::to_vec(&next)?)])
            .await?;
        *table = next;
        Ok(Response::empty())
    }

    /// `sys/mounts/<path>/tune`.
    pub(crate) async fn tune_mount(&self, path: &str, req: &Request) -> ApiResult<Response> {
        let path = normalize_mount_path(path)?;
        let mut table = self.mounts.write().await;
        let idx = table
            .entries
            .iter()
            .position(|x| x.path == path)
            .ok_or_else(|| ApiError::bad(format!("no mount at {path:?}")))?;
        if req.op == Operation::Read {
            let e = &table.entries[idx];
            return Ok(Response::data(json!({
                "default_lease_ttl": e.config.default_lease_ttl,
                "max_lease_ttl": e.config.max_lease_ttl,
                "description": e.description,
                "force_no_cache": false,
            })));
        }
        let mut next = table.clone();
        let mut cfg_fields = Map::new();
        for (k, v) in &req.data {
            match k.as_str() {
                "default_lease_ttl" | "max_lease_ttl" => {
                    cfg_fields.insert(k.clone(), v.clone());
                }
                "description" => {
                    next.entries[idx].description = v.as_str().unwrap_or_default().to_string()
                }
                "audit_non_hmac_request_keys"
                | "audit_non_hmac_response_keys"
                | "listing_visibility"
                | "passthrough_request_headers"
                | "allowed_response_headers"
                | "options" => {}
                other => return Err(ApiError::bad(format!("unknown tune setting {other:?}"))),
            }
        }
        let parsed = parse_config(Some(&Value::Object(cfg_fields.clone())))?;
        if cfg_fields.contains_key("default_lease_ttl") {
            next.entries[idx].config.default_lease_ttl = parsed.default_lease_ttl;
        }
        if cfg_fields.contains_key("max_lease_ttl") {
            next.entries[idx].config.max_lease_ttl = parsed.max_lease_ttl;
        }
        let c = &next.entries[idx].config;
        if c.max_lease_ttl > 0 && c.default_lease_ttl > c.max_lease_ttl {
            return Err(ApiError::bad(
                "default_lease_ttl must not exceed max_lease_ttl",
            ));
        }
        self.write(vec![Plain::Put(
            MOUNTS_PATH.into(),
            serde_json::to_vec(&next)?,
        )])
        .await?;
        *table = next;
        Ok(Response::empty())
    }
}
