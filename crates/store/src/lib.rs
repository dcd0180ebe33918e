//! # custos-store
//!
//! **Owns:** the storage contract every backend implements ([`Storage`]), the typed rows
//! and write operations, the group-commit batching helper, and the conformance suite
//! ([`conformance`]) that every backend must pass unchanged.
//!
//! **Must never:** see plaintext secrets. Values arrive already encrypted by the barrier;
//! only non-secret index columns (certificate serial, issuer id, expiry, revocation time)
//! are stored in the clear so that engines can query them without a full scan.
//!
//! ## Contract
//! * [`Storage::write`] applies a list of operations **atomically** and returns only after
//!   the transaction is **durable** (fsync'd / committed). Concurrent callers are
//!   group-committed: many callers share one transaction and one flush.
//! * Keys are non-empty UTF-8 strings without NUL, at most [`MAX_KEY_LEN`] bytes.
//! * [`Storage::list`] has Vault semantics: the immediate children of a prefix, with
//!   sub-folders reported once with a trailing `/`, sorted.
//!
//! ## Schema (both backends)
//! * `kv(key PRIMARY KEY, value)`: Vault-style logical entries.
//! * `certs(mount, serial, issuer_id, not_after, revoked_at, value)` with indexes on
//!   `(mount, not_after)`, revoked rows by serial, and `(mount, revoked_at)`: certificate inventory that tidy, CRL
//!   building and expiry queries read by range, never by listing millions of keys.
#![forbid(unsafe_code)]

pub mod conformance;
mod group;

pub use group::{drain_batch, Job, MAX_BATCH};

use std::future::Future;
use std::pin::Pin;

/// Longest key accepted by any backend.
pub const MAX_KEY_LEN: usize = 1024;

/// A boxed, sendable future, so that backends can sit behind `dyn Storage`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key is empty, too long, or contains NUL.
    #[error("invalid storage key: {0}")]
    InvalidKey(&'static str),
    /// The backend failed (I/O, connection, constraint). The message names the backend.
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The writer task is gone (the store is shutting down).
    #[error("storage writer is closed")]
    Closed,
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(
        backend: &'static str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            backend,
            source: Box::new(e),
        }
    }
}

/// Result alias for storage calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One certificate in a mount's inventory. `value` is barrier-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRow {
    /// Mount path of the PKI engine, e.g. `pki/`.
    pub mount: String,
    /// Serial, colon-hex lower case.
    pub serial: String,
    /// Issuer id that signed it.
    pub issuer_id: String,
    /// NotAfter, unix seconds.
    pub not_after: i64,
    /// Revocation time, unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// Encrypted certificate record.
    pub value: Vec<u8>,
}

/// A write operation. A list of them is applied atomically by [`Storage::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace a KV entry.
    Put {
        /// Key.
        key: String,
        /// Value (already encrypted where secret).
        value: Vec<u8>,
    },
    /// Delete a KV entry (no error if absent).
    Delete {
        /// Key.
        key: String,
    },
    /// Insert or replace a certificate row.
    PutCert(CertRow),
    /// Mark a certificate revoked (no-op if absent or already revoked earlier).
    RevokeCert {
        /// Mount.
        mount: String,
        /// Serial.
        serial: String,
        /// Revocation time.
        revoked_at: i64,
    },
    /// Delete a certificate row.
    DeleteCert {
        /// Mount.
        mount: String,
        /// Serial.
        serial: String,
    },
}

impl WriteOp {
    /// Checks the op's keys.
    pub fn validate(&self) -> Result<()> {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => validate_key(key),
            WriteOp::PutCert(c) => {
                validate_key(&c.mount)?;
                validate_key(&c.serial)
            }
            WriteOp::RevokeCert { mount, serial, .. } | WriteOp::DeleteCert { mount, serial } => {
                validate_key(mount)?;
                validate_key(serial)
            }
        }
    }
}

/// Validates a storage key.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::InvalidKey("too long"));
    }
    if key.contains('\0') {
        return Err(StoreError::InvalidKey("contains NUL"));
    }
    Ok(())
}

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Committed transactions (each one flush).
    pub transactions: u64,
    /// Write calls acknowledged.
    pub writes: u64,
}

/// The storage contract. See the crate docs for the guarantees.
pub trait Storage: Send + Sync + 'static {
    /// Backend name for logs and errors (`sqlite`, `postgresql`).
    fn backend(&self) -> &'static str;
    /// Reads one KV entry.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// Lists the immediate children of `prefix` (Vault semantics).
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Applies `ops` atomically; returns once durable.
    fn write(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<()>>;
    /// Reads one certificate row.
    fn get_cert<'a>(
        &'a self,
        mount: &'a str,
        serial: &'a str,
    ) -> BoxFuture<'a, Result<Option<CertRow>>>;
    /// Serials of a mount in order, after `after` (exclusive), at most `limit`.
    fn list_certs<'a>(
        &'a self,
        mount: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Certificates whose NotAfter is before `before`, oldest first, at most `limit`.
    fn certs_expiring_before<'a>(
        &'a self,
        mount: &'a str,
        before: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<CertRow>>>;
    /// Revoked certificates as `(serial, revoked_at)`, by serial after `after`, at most `limit`.
    fn revoked_certs<'a>(
        &'a self,
        mount: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>>>;
    /// Revoked certificates as `(serial, revoked_at)` with `revoked_at > since`, oldest first,
    /// at most `limit` (delta CRLs: an index range, not a scan of every revocation).
    fn revoked_since<'a>(
        &'a self,
        mount: &'a str,
        since: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>>>;
    /// Group-commit counters.
    fn stats(&self) -> StoreStats;
}

/// The smallest string greater than every string that starts with `prefix`, if any.
/// Used for index-friendly prefix range scans (`key >= prefix AND key < upper`).
pub fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        while next <= char::MAX as u32 {
            if let Some(c) = char::from_u32(next) {
                chars.push(c);
                return Some(chars.into_iter().collect());
            }
            next += 1;
        }
    }
    None
}

/// Collapses full keys under `prefix` into Vault-style immediate children.
pub fn collapse_children(prefix: &str, keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        let Some(rest) = k.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let child = match rest.find('/') {
            Some(i) => &rest[..=i],
            None => rest,
        };
        if out.last().map(String::as_str) != Some(child) {
            out.push(child.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_orders_after_every_extension() {
        let ub = prefix_upper_bound("sys/token/").unwrap();
        assert_eq!(ub, "sys/token0");
        assert!("sys/token/zzzz" < ub.as_str());
        assert!(prefix_upper_bound("").is_none());
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").unwrap(), "b");
    }

    #[test]
    fn children_are_collapsed_like_vault_lists() {
        let keys = ["p/a", "p/b/c", "p/b/d", "p/c/", "q/x"].map(String::from);
        assert_eq!(collapse_children("p/", keys), vec!["a", "b/", "c/"]);
    }

    #[test]
    fn invalid_keys_are_rejected() {
        assert!(validate_key("").is_err());
        assert!(validate_key("a\0b").is_err());
        assert!(validate_key(&"x".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(validate_key("ok/key").is_ok());
    }
}
