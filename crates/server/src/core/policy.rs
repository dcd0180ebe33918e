//! The policy store: `sys/policies/acl/*` and the legacy `sys/policy/*` used by
//! `hvac.sys.create_or_update_policy`. Parsed policies are cached; writes invalidate.

use crate::core::{Active, Plain};
use crate::error::{ApiError, ApiResult};
use crate::logical::Response;
use custos_acl::{parse_policy, Acl, Policy};
use custos_tlog::entry::{ChangeOp, Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

const POLICY_PREFIX: &str = "sys/policy/";
/// Largest policy document accepted.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

pub(crate) fn policy_key(name: &str) -> String {
    format!("{POLICY_PREFIX}{name}")
}

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    name: String,
    policy: String,
}

/// Vault's rules for policy names, plus a length bound.
pub(crate) fn validate_name(name: &str) -> ApiResult<String> {
    let n = name.to_lowercase();
    if n.is_empty() || n.len() > 128 {
        return Err(ApiError::bad("policy name must be 1 to 128 characters"));
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(ApiError::bad(
            "policy name may only contain letters, digits, '-', '_', '.' and '@'",
        ));
    }
    Ok(n)
}

impl Active {
    async fn policy(&self, name: &str) -> ApiResult<Option<Arc<Policy>>> {
        if name == "root" {
            return Ok(Some(Arc::new(Policy {
                name: "root".into(),
                rules: vec![],
            })));
        }
        if let Some(p) = self.policies.read().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(Some(p));
        }
        let Some(sp) = self.get_json::<StoredPolicy>(&policy_key(name)).await? else {
            return Ok(None);
        };
        let p = Arc::new(parse_policy(name, &sp.policy).map_err(|e| {
            ApiError::internal(std::io::Error::other(format!("stored policy {name}: {e}")))
        })?);
        if let Ok(mut c) = self.policies.write() {
            c.insert(name.to_string(), p.clone());
        }
        Ok(Some(p))
    }

    /// The ACL of a token holding `names` (unknown names grant nothing, as in Vault).
    pub(crate) async fn acl_for(&self, names: &[String]) -> ApiResult<Acl> {
        let mut ps = Vec::with_capacity(names.len());
        for n in names {
            if let Some(p) = self.policy(n).await? {
                ps.push(p);
            }
        }
        Ok(Acl::new(ps.iter().map(|p| p.as_ref())))
    }

    pub(crate) async fn policy_exists(&self, name: &str) -> ApiResult<bool> {
        Ok(name == "root" || self.store.get(&policy_key(name)).await?.is_some())
    }

    pub(crate) async fn list_policies(&self) -> ApiResult<Vec<String>> {
        let mut names = self.list(POLICY_PREFIX).await?;
        names.push("root".into());
        names.sort();
        Ok(names)
    }

    pub(crate) async fn read_policy(&self, name: &str) -> ApiResult<Response> {
        let name = validate_name(name)?;
        if name == "root" {
            return Ok(Response::data(
                json!({"name": "root", "policy": "", "rules": ""}),
            ));
        }
        let sp = self
            .get_json::<StoredPolicy>(&policy_key(&name))
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(Response::data(
            json!({"name": sp.name, "policy": sp.policy, "rules": sp.policy}),
        ))
    }

    pub(crate) async fn write_policy(
        &self,
        name: &str,
        text: Option<&str>,
        who: &str,
    ) -> ApiResult<Response> {
        let name = validate_name(name)?;
        if name == "root" {
            return Err(ApiError::bad("cannot update \"root\" policy"));
        }
        let text = text.ok_or_else(|| ApiError::bad("missing required field \"policy\""))?;
        if text.len() > MAX_POLICY_BYTES {
            return Err(ApiError::bad(format!(
                "policy is larger than {MAX_POLICY_BYTES} bytes"
            )));
        }
        // Vault accepts base64-encoded policy text as well.
        let decoded = base64_policy(text);
        let text = decoded.as_deref().unwrap_or(text);
        parse_policy(&name, text)
            .map_err(|e| ApiError::bad(format!("failed to parse policy: {e}")))?;
        let sp = StoredPolicy {
            name: name.clone(),
            policy: text.to_string(),
        };
        self.write(vec![Plain::Put(
            policy_key(&name),
            serde_json::to_vec(&sp)?,
        )])
        .await?;
        if let Ok(mut c) = self.policies.write() {
            c.remove(&name);
        }
        self.trust_log
            .append(Event::PolicyChanged {
                name,
                op: ChangeOp::Write,
                policy_sha256: Some(crate::core::sha256_hex(text.as_bytes())),
                requester: who.to_string(),
            })
            .await?;
        Ok(Response::empty())
    }

    pub(crate) async fn delete_policy(&self, name: &str, who: &str) -> ApiResult<Response> {
        let name = validate_name(name)?;
        if name == "root" || name == "default" {
            return Err(ApiError::bad(format!("cannot delete {name:?} policy")));
        }
        self.write(vec![Plain::Delete(policy_key(&name))]).await?;
        if let Ok(mut c) = self.policies.write() {
            c.remove(&name);
        }
        self.trust_log
            .append(Event::PolicyChanged {
                name,
                op: ChangeOp::Delete,
                policy_sha256: None,
                requester: who.to_string(),
            })
            .await?;
        Ok(Response::empty())
    }
}

fn base64_policy(text: &str) -> Option<String> {
    use base64::Engine as _;
    let t = text.trim();
    if t.contains(['{', '"', ' ', '\n']) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(t).ok()?;
    String::from_utf8(bytes).ok()
}
