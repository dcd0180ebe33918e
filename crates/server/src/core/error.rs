//! The API error type and its mapping to Vault's status codes.

use custos_acl::Denial;

/// An error answered to an API client. The message is what the client sees; internal
/// detail is logged, never returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 403: missing/invalid/expired token or ACL denial.
    #[error("permission denied")]
    PermissionDenied(Option<Denial>),
    /// 403: no token was sent on a path that needs one.
    #[error("permission denied: no token was sent (X-Vault-Token or Authorization: Bearer)")]
    NoToken,
    /// 403: the token sent is not a live token.
    #[error("permission denied: the token is unknown, expired or revoked")]
    UnknownToken,
    /// 403: the token is live but its policies grant nothing for this (the operation, the
    /// path; never which policies exist).
    #[error("permission denied: no policy of this token grants {op} on {path}")]
    NotGranted {
        /// The operation (`read`, `update`, …).
        op: &'static str,
        /// The path asked for.
        path: String,
    },
    /// 403 for a token named in a request body that does not exist (Vault's "bad token").
    #[error("bad token")]
    BadToken,
    /// A login credential was refused; the message names the reason (never the credential).
    #[error("permission denied: {0}")]
    LoginDenied(String),
    /// 403: the caller belongs to a quarantined device; the message is the quarantine's.
    #[error("permission denied: quarantined: {0}")]
    Quarantined(String),
    /// 404 with a message (unknown route).
    #[error("no handler for route {0:?}. route entry not found.")]
    NoRoute(String),
    /// 404 with an empty `errors` list (Vault's answer for a missing entry).
    #[error("")]
    NotFound,
    /// 405.
    #[error("unsupported operation")]
    MethodNotAllowed,
    /// 413.
    #[error("request body too large: the limit is {0} bytes")]
    TooLarge(usize),
    /// 429: too many logins from this source for this role; retry after the given seconds.
    #[error(
        "rate limit exceeded: too many logins for this role from this address; retry in {0} s"
    )]
    RateLimited(u64),
    /// 503 while sealed.
    #[error("Custos is sealed")]
    Sealed,
    /// A subsystem cannot serve (the transparency log); the message says why.
    #[error("{0}")]
    Unavailable(String),
    /// 503 (504 semantics) when the request timed out.
    #[error("request timed out after {0} seconds")]
    Timeout(u64),
    /// 500: logged with detail; the client sees a generic message.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// HTTP status code, as Vault uses them.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::PermissionDenied(_)
            | ApiError::NoToken
            | ApiError::UnknownToken
            | ApiError::NotGranted { .. }
            | ApiError::BadToken
            | ApiError::LoginDenied(_)
            | ApiError::Quarantined(_) => 403,
            ApiError::NoRoute(_) | ApiError::NotFound => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::TooLarge(_) => 413,
            ApiError::RateLimited(_) => 429,
            ApiError::Sealed | ApiError::Unavailable(_) => 503,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `errors` array of the JSON body.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ApiError::NotFound => vec![],
            ApiError::PermissionDenied(Some(d)) => vec![d.to_string()],
            other => vec![other.to_string()],
        }
    }

    /// Shorthand for a 400.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// Wraps an internal failure.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

impl From<custos_auth::AuthError> for ApiError {
    fn from(e: custos_auth::AuthError) -> Self {
        match e {
            custos_auth::AuthError::Invalid(m) => ApiError::BadRequest(m),
            custos_auth::AuthError::Denied(m) => ApiError::LoginDenied(m),
            k @ custos_auth::AuthError::UnknownKid(_) => ApiError::LoginDenied(k.to_string()),
        }
    }
}

impl From<custos_store::StoreError> for ApiError {
    fn from(e: custos_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<custos_barrier::BarrierError> for ApiError {
    fn from(e: custos_barrier::BarrierError) -> Self {
        ApiError::internal(e)
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::internal(e)
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
