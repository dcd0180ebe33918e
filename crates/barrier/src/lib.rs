//! # custos-barrier
//!
//! The cryptographic barrier between Custos and its storage.
//!
//! **Owns:** the keyring of data keys (AES-256-GCM), the root key that encrypts the keyring,
//! the envelope format of every encrypted entry (with the storage location bound in as
//! associated data), and Shamir secret sharing of the unseal key over GF(256).
//!
//! **Must never:** perform I/O, read clocks, log or `Debug`-print key material, or keep key
//! bytes alive after they are dropped (all key buffers are zeroized).
//!
//! Layering (the same as Vault's):
//! ```text
//! unseal key  --(Shamir N/T, or a key file)-->  held by operators
//!     | wraps (AES-256-GCM, AAD "core/root-key")
//! root key
//!     | wraps (AES-256-GCM, AAD "core/keyring")
//! keyring = { term 1: data key, term 2: data key, ... }   (sys/rotate adds a term)
//!     | encrypts every entry (AES-256-GCM, AAD = version || term || storage path)
//! stored values
//! ```
#![forbid(unsafe_code)]

mod envelope;
mod keyring;
pub mod shamir;

pub use envelope::{open_with_key, seal_with_key, KEY_LEN};
pub use keyring::{Keyring, KeyringStatus, KEYRING_PATH};

use zeroize::Zeroizing;

/// A 256-bit secret key whose bytes are wiped when dropped.
pub type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// Errors of the barrier. Messages never contain key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BarrierError {
    /// The ciphertext failed authentication: wrong key, wrong location, or tampering.
    #[error("ciphertext failed authentication (wrong key, wrong location or tampered data)")]
    Authentication,
    /// The ciphertext is not in the barrier's envelope format.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The entry was encrypted with a keyring term this keyring does not hold.
    #[error("entry was encrypted with unknown key term {0}")]
    UnknownTerm(u32),
    /// The system random generator failed.
    #[error("system random number generator failed")]
    Random,
    /// The keyring's serialized form is invalid.
    #[error("keyring is corrupt: {0}")]
    CorruptKeyring(&'static str),
    /// Shamir splitting or combining failed.
    #[error(transparent)]
    Shamir(#[from] shamir::ShamirError),
}

/// Fills `buf` from the operating system's CSPRNG (via aws-lc).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), BarrierError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| BarrierError::Random)
}

/// Generates a fresh random 256-bit key.
pub fn generate_key() -> Result<SecretKey, BarrierError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    random_bytes(k.as_mut())?;
    Ok(k)
}
