//! Transport-independent request and response: what the HTTP edge hands to the core.

use custos_acl::Operation;
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use zeroize::Zeroizing;

/// One API request after HTTP parsing.
#[derive(Debug)]
pub struct Request {
    /// Request id (uuid), echoed as `request_id`.
    pub id: String,
    /// The logical operation.
    pub op: Operation,
    /// Path below `/v1/`, without a leading `/`.
    pub path: String,
    /// Body fields (JSON object) or query parameters for reads.
    pub data: Map<String, Value>,
    /// The client token, if one was sent.
    pub token: Option<Zeroizing<String>>,
    /// The peer address.
    pub remote_addr: Option<SocketAddr>,
    /// True for HEAD requests (health checks answer with no body).
    pub head: bool,
    /// The body, unparsed, for binary protocols (`application/ocsp-request`).
    pub raw_body: Option<Vec<u8>>,
    /// The TLS client certificate chain (DER, leaf first), when one was presented.
    pub peer_certs: Vec<Vec<u8>>,
}

impl Request {
    /// A string field, if present and a string (numbers and bools are stringified, as Vault's
    /// field parser accepts them).
    pub fn str_field(&self, k: &str) -> Option<String> {
        match self.data.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Vault's `auth` block.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuthBlock {
    /// The new token (secret).
    pub client_token: String,
    /// Its accessor.
    pub accessor: String,
    /// All policies.
    pub policies: Vec<String>,
    /// Policies attached to the token.
    pub token_policies: Vec<String>,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// TTL in seconds.
    pub lease_duration: i64,
    /// Renewable.
    pub renewable: bool,
    /// Entity id (identity is not implemented: empty).
    pub entity_id: String,
    /// `service`.
    pub token_type: String,
    /// Orphan.
    pub orphan: bool,
    /// Remaining uses (0 = unlimited).
    pub num_uses: i64,
}

/// A handler's answer.
#[derive(Debug, Default)]
pub struct Response {
    /// Overrides the status code (health endpoints).
    pub status: Option<u16>,
    /// `data`.
    pub data: Option<Map<String, Value>>,
    /// `auth`.
    pub auth: Option<AuthBlock>,
    /// `warnings`.
    pub warnings: Vec<String>,
    /// A non-JSON body with its content type (metrics, tiles, CRLs): shared bytes, so a
    /// cached body (a CRL of a million entries) is sent without a copy.
    pub raw: Option<(&'static str, bytes::Bytes)>,
    /// A `Cache-Control` header (transparency-log tiles and checkpoints).
    pub cache_control: Option<&'static str>,
    /// Send the JSON body without Vault's envelope (sys/health, sys/seal-status, sys/init…).
    pub bare: bool,
    /// Also copy the `data` fields to the top level of the envelope (legacy sys endpoints).
    pub top_level: bool,
}

impl Response {
    /// A response with `data`.
    pub fn data(v: Value) -> Self {
        Response {
            data: match v {
                Value::Object(m) => Some(m),
                _ => None,
            },
            ..Default::default()
        }
    }

    /// A body sent without the envelope.
    pub fn bare(v: Value) -> Self {
        Response {
            bare: true,
            ..Response::data(v)
        }
    }

    /// An empty success (204).
    pub fn empty() -> Self {
        Response::default()
    }

    /// A LIST answer: `{"keys": [...]}`, or 404 when empty (Vault semantics).
    pub fn list(keys: Vec<String>) -> crate::error::ApiResult<Self> {
        if keys.is_empty() {
            return Err(crate::error::ApiError::NotFound);
        }
        Ok(Response::data(serde_json::json!({ "keys": keys })))
    }
}
