//! The pure logic of Custos's login methods, with no I/O: the server fetches keys, stores
//! roles and mints tokens; this crate decides whether a credential is acceptable.
//!
//! * [`jwt`]: JWT/OIDC signature and claim validation (allowlisted algorithms only).
//! * [`kube`]: Kubernetes service-account tokens and role bindings.
//! * [`approle`]: AppRole role and secret-ID rules.
//! * [`cert`]: TLS client-certificate matching against a trusted CA and constraints.
//! * [`params`]: the `token_*` fields every role carries, and CIDR bindings.
#![forbid(unsafe_code)]

pub mod approle;
pub mod cert;
pub mod jwt;
pub mod kube;
pub mod params;

/// Why a login or a role definition was refused. Every variant carries a message that names
/// the field or claim at fault; none ever contains the credential itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed input or a role definition that cannot work (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The credential is well-formed but not acceptable (HTTP 403 in Custos; Vault uses 400
    /// for some of these, and clients treat both as a failed login).
    #[error("{0}")]
    Denied(String),
    /// The token names a key ID that no known key has: the server may refresh its JWKS once
    /// and try again.
    #[error("no key with kid {0:?} is known")]
    UnknownKid(String),
}

impl AuthError {
    pub(crate) fn invalid(m: impl Into<String>) -> Self {
        AuthError::Invalid(m.into())
    }
    pub(crate) fn denied(m: impl Into<String>) -> Self {
        AuthError::Denied(m.into())
    }
}

impl From<custos_pki::PkiError> for AuthError {
    fn from(e: custos_pki::PkiError) -> Self {
        AuthError::Invalid(e.to_string())
    }
}

/// `*` matches any run of characters (Vault's `glob` bound-claims type).
pub use custos_pki::fields::glob;

#[cfg(test)]
mod tests;
