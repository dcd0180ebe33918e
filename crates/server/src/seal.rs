//! Seal configuration, unseal keys and key files.

use base64::Engine as _;
use custos_barrier::{SecretKey, KEY_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Plaintext storage key of the seal configuration.
pub const SEAL_CONFIG_PATH: &str = "core/seal-config";
/// Storage key (and AAD) of the root key wrapped by the unseal key.
pub const ROOT_KEY_PATH: &str = "core/root-key";
/// Storage key of the sealed keyring.
pub const KEYRING_PATH: &str = custos_barrier::KEYRING_PATH;

/// Persisted seal parameters (not secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSealConfig {
    /// `shamir` or `keyfile`.
    #[serde(rename = "type")]
    pub kind: String,
    /// N.
    pub secret_shares: u8,
    /// T.
    pub secret_threshold: u8,
    /// Unix time of init.
    pub initialized_at: i64,
}

/// Reads a 32-byte key from a file: 64 hex chars, base64 of 32 bytes, or 32 raw bytes.
pub fn read_key_file(path: &std::path::Path) -> Result<SecretKey, String> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?);
    decode_key(&raw).ok_or_else(|| {
        "must hold a 32-byte key as 64 hex characters, base64, or 32 raw bytes".to_string()
    })
}

fn decode_key(raw: &[u8]) -> Option<SecretKey> {
    let mut k: SecretKey = Zeroizing::new([0u8; KEY_LEN]);
    if raw.len() == KEY_LEN {
        k.copy_from_slice(raw);
        return Some(k);
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    let bytes = Zeroizing::new(
        hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())?,
    );
    if bytes.len() != KEY_LEN {
        return None;
    }
    k.copy_from_slice(&bytes);
    Some(k)
}

/// Decodes an unseal share as sent to `sys/unseal` (hex or base64).
pub fn decode_share(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    let s = s.trim();
    let v = hex::decode(s)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(s).ok())?;
    (v.len() == KEY_LEN + 1).then(|| Zeroizing::new(v))
}
