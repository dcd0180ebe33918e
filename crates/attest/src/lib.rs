//! Remote attestation, decided without I/O: TPM 2.0 quotes ([`tpm`]), measured-boot event
//! logs ([`eventlog`]), the attestation policy ([`policy`]), the appraisal that turns evidence
//! into a TRUSTED or UNTRUSTED verdict with every failed rule named ([`verify`]), and the
//! verifier's half of credential activation ([`credential`]), and the fleet view: states,
//! counts, outliers and automatic quarantine ([`fleet`]).
//!
//! The server's attestation engine stores devices, nonces and verdicts and supplies the
//! reference values (the provenance store); the device side (`custos agent`) talks to the TPM.
//! This crate reads no clock, file or socket: time and references come in as arguments.
#![forbid(unsafe_code)]

pub mod credential;
pub mod ek;
pub mod eventlog;
pub mod fleet;
pub mod policy;
pub mod references;
pub mod rollout;
pub mod soft;
pub mod tpm;
pub mod verify;
mod wire;

/// A structure could not be read, or a signature or key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not the structure they claim to be.
    #[error("{what}: {detail}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// Where and why.
        detail: String,
    },
    /// A signature that does not verify, or a key or scheme that is not accepted.
    #[error("{0}")]
    Signature(String),
    /// Credential activation could not be prepared (an EK key that cannot be used).
    #[error("credential: {0}")]
    Credential(String),
}
