//! # custos-pki
//!
//! The PKI core, free of I/O: roles with Vault's fields, the request policy (names, SANs,
//! TTLs), the 3GPP SBA certificate profile of TS 33.310 6.1.3c, CSR verification, certificate
//! and CRL signing (rcgen on aws-lc-rs), and a profile linter for any certificate.
//!
//! **Must never:** copy a CSR's extensions into a certificate (only CN, SANs and the key are
//! taken, and a CA:TRUE request is refused), issue a certificate the role or profile forbids,
//! or read clocks and storage (the server passes them in).
#![forbid(unsafe_code)]
#![allow(missing_docs)]

pub mod crl;
pub mod csr;
pub mod der;
pub mod fields;
pub mod identity;
pub mod issue;
pub mod lint;
pub mod ocsp;
pub mod policy;
pub mod role;
pub mod sba;

/// PKI errors. Every variant is a client error except `Crypto`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PkiError {
    /// A field is missing or malformed.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    /// The role does not allow what was asked.
    #[error("{0}")]
    NotAllowed(String),
    /// The 3GPP SBA profile forbids it (the message names the clause).
    #[error("{0}")]
    Profile(String),
    /// Key generation or signing failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

impl PkiError {
    /// A field error.
    pub fn field(field: &str, reason: &str) -> Self {
        PkiError::Field {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
