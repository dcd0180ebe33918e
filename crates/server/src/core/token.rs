//! The token store (`auth/token/*`).
//!
//! Tokens are stored only as HMAC-SHA256 keyed hashes under `sys/token/id/<hash>`; the HMAC
//! key is a barrier-encrypted random key. Indexes: accessor → id, parent → children (for
//! revoking a tree), and an expiry index the sweeper walks in time order.

use crate::core::{now_unix, rfc3339, Active, Core, Plain};
use crate::duration::duration_value;
use crate::error::{ApiError, ApiResult};
use crate::logical::{AuthBlock, Request, Response};
use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use zeroize::Zeroizing;

const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
const EXPIRY_PREFIX: &str = "sys/token/expiry/";
/// Prefix of every token Custos issues.
pub const TOKEN_PREFIX: &str = "cst.";

/// A stored token. Holds no secret: only the keyed hash of the token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TokenEntry {
    pub id_hash: String,
    pub accessor: String,
    pub parent: Option<String>,
    pub policies: Vec<String>,
    pub meta: Map<String, Value>,
    pub display_name: String,
    pub num_uses: i64,
    pub creation_time: i64,
    pub creation_ttl: i64,
    pub expire_time: i64,
    pub explicit_max_ttl: i64,
    pub period: i64,
    pub renewable: bool,
    pub orphan: bool,
    pub path: String,
    /// `token_bound_cidrs` of the login role: the token works only from these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<custos_auth::params::Cidr>,
}

fn random_b64(n: usize) -> ApiResult<String> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    custos_barrier::random_bytes(&mut b)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*b))
}

pub(crate) fn hash_token(key: &hmac::Key, token: &str) -> String {
    hex::encode(hmac::sign(key, token.as_bytes()).as_ref())
}

fn accessor_key(a: &Active, accessor: &str) -> String {
    format!("{ACCESSOR_PREFIX}{}", hash_token(&a.token_key, accessor))
}

fn expiry_key(expire: i64, id: &str) -> String {
    format!("{EXPIRY_PREFIX}{expire:020}/{id}")
}

impl TokenEntry {
    /// The initial root token: policy `root`, no expiry.
    pub(crate) fn new_root(
        a: &Active,
        id: Option<&str>,
        now: i64,
    ) -> ApiResult<(Zeroizing<String>, TokenEntry)> {
        let token = match id {
            Some(t) => Zeroizing::new(t.to_string()),
            None => Zeroizing::new(format!("{TOKEN_PREFIX}{}", random_b64(24)?)),
        };
        let e = TokenEntry {
            id_hash: hash_token(&a.token_key, &token),
            accessor: random_b64(18)?,
            parent: None,
            policies: vec!["root".into()],
            meta: Map::new(),
            display_name: "root".into(),
            num_uses: 0,
            creation_time: now,
            creation_ttl: 0,
            expire_time: 0,
            explicit_max_ttl: 0,
            period: 0,
            renewable: false,
            orphan: true,
            path: "auth/token/root".into(),
            bound_cidrs: Vec::new(),
        };
        Ok((token, e))
    }

    /// The writes that store this entry and its indexes.
    pub(crate) fn storage_ops(&self, a: &Active) -> ApiResult<Vec<Plain>> {
        let mut ops = vec![
            Plain::Put(
                format!("{ID_PREFIX}{}", self.id_hash),
                serde_json::to_vec(self)?,
            ),
            Plain::Put(
                accessor_key(a, &self.accessor),
                serde_json::to_vec(&json!({"id": self.id_hash, "accessor": self.accessor}))?,
            ),
        ];
        if let Some(p) = &self.parent {
            ops.push(Plain::Put(
                format!("{PARENT_PREFIX}{p}/{}", self.id_hash),
                Vec::new(),
            ));
        }
        if self.expire_time > 0 {
            ops.push(Plain::Put(
                expiry_key(self.expire_time, &self.id_hash),
                Vec::new(),
            ));
        }
        Ok(ops)
    }

    fn ttl_remaining(&self, now: i64) -> i64 {
        if self.expire_time == 0 {
            0
        } else {
            (self.expire_time - now).max(0)
        }
    }

    fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    fn lookup_data(&self, id: Option<&str>, now: i64) -> Value {
        json!({
            "accessor": self.accessor,
            "creation_time": self.creation_time,
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": if self.expire_time == 0 { Value::Null } else { json!(rfc3339(self.expire_time)) },
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": id.unwrap_or(""),
            "issue_time": rfc3339(self.creation_time),
            "meta": if self.meta.is_empty() { Value::Null } else { Value::Object(self.meta.clone()) },
            "num_uses": self.num_uses,
            "orphan": self.orphan,
            "path": self.path,
            "period": if self.period > 0 { json!(self.period) } else { Value::Null },
            "policies": self.policies,
            "renewable": self.renewable,
            "ttl": self.ttl_remaining(now),
            "type": "service",
        })
    }

    fn auth_block(&self, token: &str, now: i64) -> AuthBlock {
        AuthBlock {
            client_token: token.to_string(),
            accessor: self.accessor.clone(),
            policies: self.policies.clone(),
            token_policies: self.policies.clone(),
            metadata: self.meta.clone(),
            lease_duration: self.ttl_remaining(now),
            renewable: self.renewable,
            entity_id: String::new(),
            token_type: "service".into(),
            orphan: self.orphan,
            num_uses: self.num_uses,
        }
    }
}

impl Active {
    /// Finds a live token by its secret value. Expired tokens are treated as absent.
    pub(crate) async fn lookup_token(&self, token: &str) -> ApiResult<Option<TokenEntry>> {
        let id = hash_token(&self.token_key, token);
        self.lookup_token_by_hash(&id).await
    }

    async fn lookup_token_by_hash(&self, id: &str) -> ApiResult<Option<TokenEntry>> {
        let Some(e) = self
            .get_json::<TokenEntry>(&format!("{ID_PREFIX}{id}"))
            .await?
        else {
            return Ok(None);
        };
        if e.expire_time > 0 && e.expire_time <= now_unix() {
            return Ok(None);
        }
        if e.num_uses < 0 {
            // Its last permitted use is being served right now.
            return Ok(None);
        }
        Ok(Some(e))
    }

    async fn lookup_accessor(&self, accessor: &str) -> ApiResult<Option<TokenEntry>> {
        let Some(v) = self
            .get_json::<Value>(&accessor_key(self, accessor))
            .await?
        else {
            return Ok(None);
        };
        match v.get("id").and_then(Value::as_str) {
            Some(id) => self.lookup_token_by_hash(id).await,
            None => Ok(None),
        }
    }

    /// Records one use of a limited-use token. Returns true if that was the last use, and
    /// refuses the request if the uses ran out meanwhile. The re-read under a lock makes
    /// concurrent uses count exactly once each.
    pub(crate) async fn use_token(&self, e: &TokenEntry) -> ApiResult<bool> {
        if e.num_uses <= 0 {
            return Ok(false);
        }
        let _guard = self.use_lock.lock().await;
        let key = format!("{ID_PREFIX}{}", e.id_hash);
        let mut cur: TokenEntry = self
            .get_json(&key)
            .await?
            .ok_or(ApiError::PermissionDenied(None))?;
        if cur.num_uses < 0 {
            // Its last use is in flight in another request.
            return Err(ApiError::PermissionDenied(None));
        }
        if cur.num_uses == 0 {
            return Ok(false);
        }
        cur.num_uses -= 1;
        let last = cur.num_uses == 0;
        if last {
            // Vault's marker for "last use in progress": no further request may start.
            cur.num_uses = -1;
        }
        self.put_json(&key, &cur).await?;
        Ok(last)
    }

    /// Revokes a token and, unless `orphan_children`, its whole subtree, atomically.
    pub(crate) async fn revoke_tree(
        &self,
        root: &TokenEntry,
        orphan_children: bool,
    ) -> ApiResult<()> {
        let mut ops = Vec::new();
        let mut queue = vec![root.id_hash.clone()];
        let mut first = true;
        while let Some(id) = queue.pop() {
            let entry: Option<TokenEntry> = self.get_json(&format!("{ID_PREFIX}{id}")).await?;
            let children: Vec<String> = self
                .list(&format!("{PARENT_PREFIX}{id}/"))
                .await?
                .into_iter()
                .filter(|c| !c.ends_with('/'))
                .collect();
            for c in &children {
                ops.push(Plain::Delete(format!("{PARENT_PREFIX}{id}/{c}")));
            }
            if first && orphan_children {
                for c in &children {
                    if let Some(mut ce) = self
                        .get_json::<TokenEntry>(&format!("{ID_PREFIX}{c}"))
                        .await?
                    {
                        ce.parent = None;
                        ce.orphan = true;
                        ops.push(Plain::Put(
                            format!("{ID_PREFIX}{c}"),
                            serde_json::to_vec(&ce)?,
                        ));
                    }
                }
            } else {
                queue.extend(children);
            }
            first = false;
            if let Some(e) = entry {
                ops.push(Plain::Delete(format!("{ID_PREFIX}{}", e.id_hash)));
                ops.push(Plain::Delete(accessor_key(self, &e.accessor)));
                if let Some(p) = &e.parent {
                    ops.push(Plain::Delete(format!("{PARENT_PREFIX}{p}/{}", e.id_hash)));
                }
                if e.expire_time > 0 {
                    ops.push(Plain::Delete(expiry_key(e.expire_time, &e.id_hash)));
                }
            }
        }
        self.write(ops).await
    }

    /// Removes tokens whose expiry has passed. Returns how many were revoked.
    pub(crate) async fn sweep_expired(&self, now: i64) -> ApiResult<usize> {
        let mut n = 0;
        for bucket in self.list(EXPIRY_PREFIX).await? {
            let Some(ts) = bucket.strip_suffix('/').and_then(|b| b.parse::<i64>().ok()) else {
                continue;
            };
            if ts > now {
                break;
            }
            for id in self.list(&format!("{EXPIRY_PREFIX}{bucket}")).await? {
                let e: Option<TokenEntry> = self.get_json(&format!("{ID_PREFIX}{id}")).await?;
                match e {
                    Some(e) => self.revoke_tree(&e, false).await?,
                    None => {
                        self.write(vec![Plain::Delete(format!("{EXPIRY_PREFIX}{bucket}{id}"))])
                            .await?
                    }
                }
                n += 1;
            }
        }
        Ok(n)
    }
}

fn string_list(v: &Value, field: &str) -> ApiResult<Vec<String>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| ApiError::bad(format!("{field}: must be a list of strings")))
            })
            .collect(),
        Value::String(s) => Ok(s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(ApiError::bad(format!("{field}: must be a list of strings"))),
    }
}

fn bool_field(data: &Map<String, Value>, k: &str, default: bool) -> ApiResult<bool> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad(format!("{k}: must be a boolean"))),
        Some(_) => Err(ApiError::bad(format!("{k}: must be a boolean"))),
    }
}

fn int_field(data: &Map<String, Value>, k: &str) -> ApiResult<i64> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad(format!("{k}: must be an integer"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad(format!("{k}: must be an integer"))),
        Some(_) => Err(ApiError::bad(format!("{k}: must be an integer"))),
    }
}

fn ttl_field(data: &Map<String, Value>, k: &str) -> ApiResult<i64> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => duration_value(v)
            .map(|s| s as i64)
            .map_err(|e| ApiError::bad(format!("{k}: {e}"))),
    }
}

const CREATE_FIELDS: &[&str] = &[
    "id",
    "policies",
    "meta",
    "no_parent",
    "no_default_policy",
    "renewable",
    "ttl",
    "type",
    "explicit_max_ttl",
    "display_name",
    "num_uses",
    "period",
    "lease",
    "entity_alias",
    "role_name",
];

/// `auth/token/create` and `create-orphan`.
pub(crate) async fn create(
    core: &Core,
    a: &Active,
    parent: &TokenEntry,
    req: &Request,
    orphan_path: bool,
) -> ApiResult<Response> {
    let d = &req.data;
    if let Some(k) = d.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad(format!("unknown field {k:?}")));
    }
    if d.get("entity_alias").is_some_and(|v| !v.is_null())
        || d.get("role_name").is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad(
            "token roles and entity aliases are not supported",
        ));
    }
    if let Some(t) = d.get("type").and_then(Value::as_str) {
        if t != "service" && t != "default" {
            return Err(ApiError::bad(format!(
                "token type {t:?} is not supported; only \"service\" tokens are issued"
            )));
        }
    }
    let parent_root = parent.is_root();
    let mut warnings = Vec::new();
    let no_parent = bool_field(d, "no_parent", false)?;
    if no_parent && !parent_root && !orphan_path {
        return Err(ApiError::bad(
            "root or sudo privileges required to create orphan token",
        ));
    }
    let custom_id = d.get("id").and_then(Value::as_str).map(str::to_string);
    if custom_id.is_some() && !parent_root {
        return Err(ApiError::bad(
            "root or sudo privileges required to specify token id",
        ));
    }
    let mut policies = string_list(d.get("policies").unwrap_or(&Value::Null), "policies")?;
    let no_default = bool_field(d, "no_default_policy", false)?;
    if policies.is_empty() {
        policies = parent
            .policies
            .iter()
            .filter(|p| !(no_default && *p == "default"))
            .cloned()
            .collect();
    } else if !parent_root {
        let allowed = |p: &String| p == "default" || parent.policies.contains(p);
        if let Some(bad) = policies.iter().find(|p| !allowed(p)) {
            return Err(ApiError::bad(format!(
                "child policies must be subset of parent: {bad:?} is not held by the parent token"
            )));
        }
    }
    for p in &policies {
        if p.is_empty() || p.len() > 128 {
            return Err(ApiError::bad("policies: invalid policy name"));
        }
    }
    if !no_default && !policies.iter().any(|p| p == "root" || p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    let meta = match d.get("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            if m.values().any(|v| !v.is_string()) {
                return Err(ApiError::bad("meta: values must be strings"));
            }
            m.clone()
        }
        Some(_) => return Err(ApiError::bad("meta: must be a map of strings")),
    };
    let num_uses = int_field(d, "num_uses")?;
    if num_uses < 0 {
        return Err(ApiError::bad(
            "num_uses: must be zero (unlimited) or positive",
        ));
    }
    let renewable = bool_field(d, "renewable", true)?;
    let period = ttl_field(d, "period")?;
    let explicit_max = ttl_field(d, "explicit_max_ttl")?;
    let mut ttl = ttl_field(d, "ttl")?;
    if ttl == 0 {
        ttl = ttl_field(d, "lease")?;
    }
    let max = core.cfg.max_lease_ttl as i64;
    let is_root_token = policies.iter().any(|p| p == "root");
    if period > 0 {
        ttl = period;
    } else if ttl == 0 && !(is_root_token && explicit_max == 0) {
        ttl = core.cfg.default_lease_ttl as i64;
    }
    if period == 0 && ttl > max {
        warnings.push(format!(
            "TTL of {ttl}s exceeded the effective max_ttl of {max}s; TTL value is capped accordingly"
        ));
        ttl = max;
    }
    if explicit_max > 0 && (ttl == 0 || ttl > explicit_max) {
        if ttl > explicit_max {
            warnings.push(format!(
                "explicit max TTL of {explicit_max}s is less than the requested TTL; TTL value is capped accordingly"
            ));
        }
        ttl = explicit_max;
    }
    let now = now_unix();
    let display = d
        .get("display_name")
        .and_then(Value::as_str)
        .map(|s| format!("token-{s}"))
        .unwrap_or_else(|| "token".into());
    let token = Zeroizing::new(match custom_id {
        Some(id) => {
            if id.is_empty() || id.len() > 256 || id.contains('\0') {
                return Err(ApiError::bad("id: invalid token id"));
            }
            if a.lookup_token(&id).await?.is_some() {
                return Err(ApiError::bad("id: a token with that id already exists"));
            }
            id
        }
        None => format!("{TOKEN_PREFIX}{}", random_b64(24)?),
    });
    let orphan = no_parent || orphan_path;
    let entry = TokenEntry {
        id_hash: hash_token(&a.token_key, &token),
        accessor: random_b64(18)?,
        parent: if orphan {
            None
        } else {
            Some(parent.id_hash.clone())
        },
        policies,
        meta,
        display_name: display,
        num_uses,
        creation_time: now,
        creation_ttl: ttl,
        expire_time: if ttl > 0 { now + ttl } else { 0 },
        explicit_max_ttl: explicit_max,
        period,
        renewable,
        orphan,
        path: req.path.clone(),
        bound_cidrs: Vec::new(),
    };
    a.write(entry.storage_ops(a)?).await?;
    Ok(Response {
        auth: Some(entry.auth_block(&token, now)),
        warnings,
        ..Default::default()
    })
}

/// Mints the token a successful login returns: an orphan service token carrying the role's
/// `token_*` settings, stored durably before the response.
pub(crate) async fn login_token(
    core: &Core,
    a: &Active,
    path: &str,
    p: &custos_auth::params::TokenParams,
    display_name: &str,
    meta: Map<String, Value>,
) -> ApiResult<Response> {
    let mut policies = p.policies.clone();
    if !p.no_default_policy && !policies.iter().any(|x| x == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    let sys_max = core.cfg.max_lease_ttl as i64;
    let max = match i64::try_from(p.max_ttl).unwrap_or(i64::MAX) {
        0 => sys_max,
        m => m.min(sys_max),
    };
    let period = i64::try_from(p.period).unwrap_or(i64::MAX);
    let mut ttl = if period > 0 {
        period
    } else {
        match i64::try_from(p.ttl).unwrap_or(i64::MAX) {
            0 => core.cfg.default_lease_ttl as i64,
            t => t,
        }
    };
    let mut warnings = Vec::new();
    if period == 0 && ttl > max {
        warnings.push(format!(
            "TTL of {ttl}s exceeded the effective max_ttl of {max}s; TTL value is capped accordingly"
        ));
        ttl = max;
    }
    let now = now_unix();
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", random_b64(24)?));
    let entry = TokenEntry {
        id_hash: hash_token(&a.token_key, &token),
        accessor: random_b64(18)?,
        parent: None,
        policies,
        meta,
        display_name: display_name.to_string(),
        num_uses: p.num_uses,
        creation_time: now,
        creation_ttl: ttl,
        expire_time: now + ttl,
        explicit_max_ttl: if period > 0 { 0 } else { max },
        period,
        renewable: true,
        orphan: true,
        path: path.to_string(),
        bound_cidrs: p.bound_cidrs.clone(),
    };
    a.write(entry.storage_ops(a)?).await?;
    Ok(Response {
        auth: Some(entry.auth_block(&token, now)),
        warnings,
        ..Default::default()
    })
}

fn token_field(req: &Request) -> ApiResult<String> {
    req.str_field("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad("missing required field \"token\""))
}

fn accessor_field(req: &Request) -> ApiResult<String> {
    req.str_field("accessor")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad("missing required field \"accessor\""))
}

fn invalid_token() -> ApiError {
    ApiError::BadToken
}

/// `lookup`, `lookup-self`, `lookup-accessor`.
pub(crate) async fn lookup(
    a: &Active,
    req: &Request,
    caller: &TokenEntry,
    caller_token: &str,
    which: &str,
) -> ApiResult<Response> {
    let now = now_unix();
    match which {
        "lookup-self" => Ok(Response::data(caller.lookup_data(Some(caller_token), now))),
        "lookup" => {
            let t = token_field(req)?;
            let e = a.lookup_token(&t).await?.ok_or_else(invalid_token)?;
            Ok(Response::data(e.lookup_data(Some(&t), now)))
        }
        _ => {
            let acc = accessor_field(req)?;
            let e = a
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad("invalid accessor"))?;
            Ok(Response::data(e.lookup_data(None, now)))
        }
    }
}

/// Renews `e` by `increment` seconds (0 = its original TTL).
async fn renew_entry(
    core: &Core,
    a: &Active,
    e: &TokenEntry,
    token: &str,
    increment: i64,
) -> ApiResult<Response> {
    let now = now_unix();
    if e.expire_time == 0 {
        return Ok(Response {
            auth: Some(e.auth_block(token, now)),
            ..Default::default()
        });
    }
    if !e.renewable {
        return Err(ApiError::bad("lease is not renewable"));
    }
    let mut warnings = Vec::new();
    let want = if e.period > 0 {
        e.period
    } else if increment > 0 {
        increment
    } else {
        e.creation_ttl
    };
    let mut limit = i64::MAX;
    if e.explicit_max_ttl > 0 {
        limit = limit.min(e.creation_time + e.explicit_max_ttl);
    }
    if e.period == 0 {
        limit = limit.min(e.creation_time + core.cfg.max_lease_ttl as i64);
    }
    let mut new_expire = now + want;
    if new_expire > limit {
        new_expire = limit;
        warnings.push("TTL of the renewed token is capped by its maximum TTL".to_string());
    }
    let mut e2 = e.clone();
    e2.expire_time = new_expire.max(now + 1);
    let mut ops = vec![
        Plain::Delete(expiry_key(e.expire_time, &e.id_hash)),
        Plain::Put(
            format!("{ID_PREFIX}{}", e.id_hash),
            serde_json::to_vec(&e2)?,
        ),
        Plain::Put(expiry_key(e2.expire_time, &e.id_hash), Vec::new()),
    ];
    if e.expire_time == e2.expire_time {
        ops.remove(0);
    }
    a.write(ops).await?;
    Ok(Response {
        auth: Some(e2.auth_block(token, now)),
        warnings,
        ..Default::default()
    })
}

/// `renew`, `renew-self`, `renew-accessor`.
pub(crate) async fn renew(
    core: &Core,
    a: &Active,
    req: &Request,
    caller: &TokenEntry,
    caller_token: &str,
    which: &str,
) -> ApiResult<Response> {
    let inc = ttl_field(&req.data, "increment")?;
    match which {
        "renew-self" => renew_entry(core, a, caller, caller_token, inc).await,
        "renew" => {
            let t = token_field(req)?;
            let e = a.lookup_token(&t).await?.ok_or_else(invalid_token)?;
            renew_entry(core, a, &e, &t, inc).await
        }
        _ => {
            let acc = accessor_field(req)?;
            let e = a
                .lookup_accessor(&acc)
                .await?
                .ok_or_else(|| ApiError::bad("invalid accessor"))?;
            renew_entry(core, a, &e, "", inc).await
        }
    }
}

/// `revoke`, `revoke-self`, `revoke-accessor`, `revoke-orphan`.
pub(crate) async fn revoke(
    a: &Active,
    req: &Request,
    caller: &TokenEntry,
    which: &str,
) -> ApiResult<Response> {
    let target = match which {
        "revoke-self" => Some(caller.clone()),
        "revoke" | "revoke-orphan" => a.lookup_token(&token_field(req)?).await?,
        _ => a.lookup_accessor(&accessor_field(req)?).await?,
    };
    // Vault answers 204 for an unknown token too, so revocation is idempotent.
    if let Some(t) = target {
        a.revoke_tree(&t, which == "revoke-orphan").await?;
    }
    Ok(Response::empty())
}

/// `LIST auth/token/accessors` (sudo).
pub(crate) async fn list_accessors(a: &Active) -> ApiResult<Response> {
    let mut out = Vec::new();
    for k in a.list(ACCESSOR_PREFIX).await? {
        if let Some(v) = a
            .get_json::<Value>(&format!("{ACCESSOR_PREFIX}{k}"))
            .await?
        {
            if let Some(acc) = v.get("accessor").and_then(Value::as_str) {
                out.push(acc.to_string());
            }
        }
    }
    out.sort();
    Response::list(out)
}

/// Background task: revokes expired tokens every `every` seconds while unsealed.
pub fn spawn_sweeper(core: Arc<Core>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Some(a) = core.active() {
                match a.sweep_expired(now_unix()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(revoked = n, "expired tokens revoked"),
                    Err(e) => tracing::warn!(error = %e, "token sweep failed"),
                }
                core.periodic().await;
            }
        }
    });
}
