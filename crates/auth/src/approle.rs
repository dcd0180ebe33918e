//! AppRole: a role ID (public, like a username) plus a secret ID (a generated secret with a
//! TTL, a use count and CIDR bindings). The server stores only a keyed hash of each secret
//! ID, inside the encrypted barrier.

use crate::params::{check_source, cidrs_of, Cidr, TokenParams};
use crate::AuthError;
use custos_pki::fields::{bool_of, duration_of, int_of, str_of};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// `auth/<approle>/role/:name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppRole {
    /// `role_id`.
    pub role_id: String,
    /// `bind_secret_id` (default true): a secret ID is required at login.
    pub bind_secret_id: bool,
    /// `secret_id_ttl`, seconds (0: no expiry).
    pub secret_id_ttl: u64,
    /// `secret_id_num_uses` (0: unlimited).
    pub secret_id_num_uses: i64,
    /// `secret_id_bound_cidrs`.
    pub secret_id_bound_cidrs: Vec<Cidr>,
    /// The token a login gets.
    pub token: TokenParams,
}

const ROLE_FIELDS: &[&str] = &[
    "role_id",
    "bind_secret_id",
    "secret_id_ttl",
    "secret_id_num_uses",
    "secret_id_bound_cidrs",
    "local_secret_ids",
];

impl AppRole {
    /// A new role with Vault's defaults and the given generated role ID.
    pub fn new(role_id: String) -> AppRole {
        AppRole {
            role_id,
            bind_secret_id: true,
            ..AppRole::default()
        }
    }

    /// Creates or updates a role from a write.
    pub fn update(&mut self, d: &Map<String, Value>) -> Result<(), AuthError> {
        if let Some(k) = d.keys().find(|k| {
            !ROLE_FIELDS.contains(&k.as_str()) && !crate::params::FIELDS.contains(&k.as_str())
        }) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        if d.contains_key("role_id") {
            let id = str_of(d, "role_id")?;
            valid_id("role_id", &id)?;
            self.role_id = id;
        }
        if d.contains_key("bind_secret_id") {
            self.bind_secret_id = bool_of(d, "bind_secret_id", true)?;
        }
        if d.contains_key("secret_id_ttl") {
            self.secret_id_ttl = duration_of(d, "secret_id_ttl")?;
        }
        if d.contains_key("secret_id_num_uses") {
            let n = int_of(d, "secret_id_num_uses", 0)?;
            if n < 0 {
                return Err(AuthError::invalid(
                    "secret_id_num_uses: must not be negative",
                ));
            }
            self.secret_id_num_uses = n;
        }
        if d.contains_key("secret_id_bound_cidrs") {
            self.secret_id_bound_cidrs = cidrs_of(d, "secret_id_bound_cidrs")?;
        }
        self.token.update(d)?;
        if !self.bind_secret_id
            && self.secret_id_bound_cidrs.is_empty()
            && self.token.bound_cidrs.is_empty()
        {
            return Err(AuthError::invalid(
                "bind_secret_id=false needs secret_id_bound_cidrs or token_bound_cidrs: a role ID alone is not a credential",
            ));
        }
        Ok(())
    }

    /// The role as read back (the role ID is read from `role-id`, as in Vault).
    pub fn to_json(&self) -> Value {
        let cidrs: Vec<String> = self
            .secret_id_bound_cidrs
            .iter()
            .cloned()
            .map(String::from)
            .collect();
        let mut m = Map::new();
        m.insert("bind_secret_id".into(), json!(self.bind_secret_id));
        m.insert("secret_id_ttl".into(), json!(self.secret_id_ttl));
        m.insert("secret_id_num_uses".into(), json!(self.secret_id_num_uses));
        m.insert("secret_id_bound_cidrs".into(), json!(cidrs));
        m.insert("local_secret_ids".into(), json!(false));
        self.token.to_json(&mut m);
        Value::Object(m)
    }
}

/// Role and secret IDs: 1..=128 printable characters without `/` or whitespace.
pub fn valid_id(field: &str, id: &str) -> Result<(), AuthError> {
    if id.is_empty()
        || id.len() > 128
        || id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(AuthError::invalid(format!(
            "{field}: must be 1 to 128 printable characters without '/' or spaces"
        )));
    }
    Ok(())
}

/// A stored secret ID (keyed by the HMAC of the secret; the secret itself is not stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretId {
    /// Public handle for lookup and destroy.
    pub accessor: String,
    /// Unix seconds.
    pub creation_time: i64,
    /// Unix seconds; 0 for none.
    pub expiration_time: i64,
    /// Remaining uses; 0 for unlimited.
    pub num_uses: i64,
    /// `cidr_list`: logins with this secret ID must come from here.
    pub cidr_list: Vec<Cidr>,
    /// `token_bound_cidrs` requested for tokens from this secret ID.
    pub token_bound_cidrs: Vec<Cidr>,
    /// Caller-supplied metadata (goes into the token's metadata).
    pub metadata: Map<String, Value>,
}

impl SecretId {
    /// A new secret ID for `role` from a `secret-id` request. The request may narrow, never
    /// widen, the role's settings.
    pub fn new(
        role: &AppRole,
        d: &Map<String, Value>,
        accessor: String,
        now: i64,
    ) -> Result<SecretId, AuthError> {
        const FIELDS: &[&str] = &[
            "metadata",
            "cidr_list",
            "token_bound_cidrs",
            "ttl",
            "num_uses",
        ];
        if let Some(k) = d.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(AuthError::invalid(format!("unknown field {k:?}")));
        }
        let metadata = match d.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::String(s)) if s.is_empty() => Map::new(),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(AuthError::invalid(
                        "metadata: must be a JSON object of strings",
                    ))
                }
            },
            Some(_) => {
                return Err(AuthError::invalid(
                    "metadata: must be a JSON object of strings",
                ))
            }
        };
        if metadata.values().any(|v| !v.is_string()) || metadata.len() > 64 {
            return Err(AuthError::invalid(
                "metadata: must be at most 64 string values",
            ));
        }
        let cidr_list = cidrs_of(d, "cidr_list")?;
        let narrower = |asked: &[Cidr], allowed: &[Cidr], what: &str| {
            if allowed.is_empty() || asked.iter().all(|c| allowed.iter().any(|a| c.within(a))) {
                Ok(())
            } else {
                Err(AuthError::invalid(format!(
                    "{what}: must lie within the role's blocks"
                )))
            }
        };
        narrower(&cidr_list, &role.secret_id_bound_cidrs, "cidr_list")?;
        let token_bound_cidrs = cidrs_of(d, "token_bound_cidrs")?;
        narrower(
            &token_bound_cidrs,
            &role.token.bound_cidrs,
            "token_bound_cidrs",
        )?;
        let mut ttl = duration_of(d, "ttl")?;
        if role.secret_id_ttl > 0 && (ttl == 0 || ttl > role.secret_id_ttl) {
            ttl = role.secret_id_ttl;
        }
        let mut num_uses = int_of(d, "num_uses", 0)?;
        if num_uses < 0 {
            return Err(AuthError::invalid("num_uses: must not be negative"));
        }
        if role.secret_id_num_uses > 0 && (num_uses == 0 || num_uses > role.secret_id_num_uses) {
            num_uses = role.secret_id_num_uses;
        }
        Ok(SecretId {
            accessor,
            creation_time: now,
            expiration_time: if ttl > 0 {
                now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
            } else {
                0
            },
            num_uses,
            cidr_list,
            token_bound_cidrs,
            metadata,
        })
    }

    /// Checks expiry and source address at login.
    pub fn check(&self, role: &AppRole, now: i64, remote: Option<IpAddr>) -> Result<(), AuthError> {
        if self.expiration_time > 0 && now >= self.expiration_time {
            return Err(AuthError::denied("invalid role or secret ID"));
        }
        check_source(&role.secret_id_bound_cidrs, remote, "secret_id_bound_cidrs")?;
        check_source(&self.cidr_list, remote, "the secret ID's cidr_list")?;
        Ok(())
    }

    /// The secret ID as `secret-id/lookup` shows it.
    pub fn to_json(&self, rfc3339: impl Fn(i64) -> String) -> Value {
        let c = |v: &[Cidr]| -> Vec<String> { v.iter().cloned().map(String::from).collect() };
        json!({
            "secret_id_accessor": self.accessor,
            "creation_time": rfc3339(self.creation_time),
            "expiration_time": if self.expiration_time > 0 { rfc3339(self.expiration_time) } else { "0001-01-01T00:00:00Z".into() },
            "secret_id_num_uses": self.num_uses,
            "secret_id_ttl": if self.expiration_time > 0 { self.expiration_time - self.creation_time } else { 0 },
            "cidr_list": c(&self.cidr_list),
            "token_bound_cidrs": c(&self.token_bound_cidrs),
            "metadata": self.metadata,
        })
    }
}
