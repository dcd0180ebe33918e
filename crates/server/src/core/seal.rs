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
    let bytes = decode_exact(text, KEY_LEN)?;
    k.copy_from_slice(&bytes);
    Some(k)
}

/// Decodes hex, else base64, accepting only a result of exactly `len` bytes (so a base64
/// string that happens to be all hex digits is not mistaken for hex).
fn decode_exact(text: &str, len: usize) -> Option<Zeroizing<Vec<u8>>> {
    let hex = hex::decode(text).ok().filter(|b| b.len() == len);
    let v = hex.or_else(|| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .filter(|b| b.len() == len)
    })?;
    Some(Zeroizing::new(v))
}

/// Decodes an unseal share as sent to `sys/unseal` (hex or base64).
pub fn decode_share(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    decode_exact(s.trim(), KEY_LEN + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_decode_from_hex_or_base64_of_exactly_33_bytes() {
        let raw = [0xabu8; KEY_LEN + 1];
        let hex_form = hex::encode(raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(&decode_share(&hex_form).unwrap()[..], &raw[..]);
        assert_eq!(&decode_share(&b64).unwrap()[..], &raw[..]);
        assert!(decode_share("abcd").is_none());
        assert!(decode_share(&hex::encode([1u8; KEY_LEN])).is_none());
    }

    #[test]
    fn base64_share_made_only_of_hex_digits_is_not_mistaken_for_hex() {
        // 44 base64 characters that are all hex digits decode to 33 bytes as base64 and to
        // 22 bytes as hex; the length decides.
        let s = "0123456789abcdef0123456789abcdef0123456789ab";
        let v = decode_share(s).unwrap();
        assert_eq!(v.len(), KEY_LEN + 1);
    }
}
