//! The keyring: numbered data keys ("terms") under a root key.

use crate::envelope::{aead_key, open, seal, term_of, KEY_LEN};
use crate::{generate_key, BarrierError, SecretKey};
use aws_lc_rs::aead::LessSafeKey;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Storage location (and AAD) of the keyring, encrypted under the root key.
pub const KEYRING_PATH: &str = "core/keyring";

struct DataKey {
    bytes: SecretKey,
    cipher: LessSafeKey,
    installed_unix: i64,
}

/// Public facts about the keyring, safe to return from `sys/key-status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyringStatus {
    /// The term new writes are encrypted with.
    pub term: u32,
    /// Unix time the active term was installed.
    pub install_time: i64,
    /// How many terms the keyring holds.
    pub terms: usize,
}

/// The data keys and the root key that protects them.
///
/// Encryption always uses the newest term; decryption picks the term named in the envelope,
/// so rotation never needs old data to be re-encrypted.
pub struct Keyring {
    root: SecretKey,
    keys: BTreeMap<u32, DataKey>,
    active: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active_term", &self.active)
            .field("terms", &self.keys.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    term: u32,
    key: String,
    installed: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    active: u32,
    keys: Vec<StoredKey>,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Keyring {
    /// A new keyring with a fresh root key and one data key (term 1).
    pub fn generate(now_unix: i64) -> Result<Self, BarrierError> {
        let root = generate_key()?;
        let mut kr = Keyring {
            root,
            keys: BTreeMap::new(),
            active: 0,
        };
        kr.rotate(now_unix)?;
        Ok(kr)
    }

    /// The root key, to be wrapped by the unseal key. Never log it.
    pub fn root_key(&self) -> &[u8; KEY_LEN] {
        &self.root
    }

    /// Adds a new data key and makes it the active term. Old terms stay for decryption.
    pub fn rotate(&mut self, now_unix: i64) -> Result<u32, BarrierError> {
        let term = self
            .active
            .checked_add(1)
            .ok_or(BarrierError::CorruptKeyring("term overflow"))?;
        let bytes = generate_key()?;
        let cipher = aead_key(&bytes)?;
        self.keys.insert(
            term,
            DataKey {
                bytes,
                cipher,
                installed_unix: now_unix,
            },
        );
        self.active = term;
        Ok(term)
    }

    /// Status of the active term.
    pub fn status(&self) -> KeyringStatus {
        KeyringStatus {
            term: self.active,
            install_time: self
                .keys
                .get(&self.active)
                .map(|k| k.installed_unix)
                .unwrap_or(0),
            terms: self.keys.len(),
        }
    }

    /// Encrypts `plaintext` for storage at `path` with the active term.
    pub fn encrypt(&self, path: &str, plaintext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or(BarrierError::UnknownTerm(self.active))?;
        seal(&key.cipher, self.active, path.as_bytes(), plaintext)
    }

    /// Decrypts a value read from `path`. Fails if it was written to another path.
    pub fn decrypt(&self, path: &str, ciphertext: &[u8]) -> Result<Vec<u8>, BarrierError> {
        let term = term_of(ciphertext)?;
        let key = self
            .keys
            .get(&term)
            .ok_or(BarrierError::UnknownTerm(term))?;
        open(&key.cipher, path.as_bytes(), ciphertext)
    }

    /// Serializes the keyring and encrypts it under the root key.
    pub fn seal(&self) -> Result<Vec<u8>, BarrierError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let stored = StoredKeyring {
            active: self.active,
            keys: self
                .keys
                .iter()
                .map(|(t, k)| StoredKey {
                    term: *t,
                    key: engine.encode(k.bytes.as_ref()),
                    installed: k.installed_unix,
                })
                .collect(),
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&stored).map_err(|_| BarrierError::CorruptKeyring("encode"))?,
        );
        crate::seal_with_key(&self.root, KEYRING_PATH, &json)
    }

    /// Opens a keyring sealed by [`Keyring::seal`] with its root key.
    pub fn open(root: SecretKey, sealed: &[u8]) -> Result<Self, BarrierError> {
        let json = crate::open_with_key(&root, KEYRING_PATH, sealed)?;
        let stored: StoredKeyring = serde_json::from_slice(&json)
            .map_err(|_| BarrierError::CorruptKeyring("not a keyring document"))?;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut keys = BTreeMap::new();
        for k in &stored.keys {
            let raw = Zeroizing::new(
                engine
                    .decode(&k.key)
                    .map_err(|_| BarrierError::CorruptKeyring("key is not base64"))?,
            );
            let mut bytes: SecretKey = Zeroizing::new([0u8; KEY_LEN]);
            if raw.len() != KEY_LEN {
                return Err(BarrierError::CorruptKeyring("key has wrong length"));
            }
            bytes.copy_from_slice(&raw);
            let cipher = aead_key(&bytes)?;
            keys.insert(
                k.term,
                DataKey {
                    bytes,
                    cipher,
                    installed_unix: k.installed,
                },
            );
        }
        if !keys.contains_key(&stored.active) {
            return Err(BarrierError::CorruptKeyring("active term missing"));
        }
        Ok(Keyring {
            root,
            keys,
            active: stored.active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_entries_readable_without_reencryption() {
        let mut kr = Keyring::generate(100).unwrap();
        let old = kr.encrypt("kv/a", b"one").unwrap();
        assert_eq!(kr.rotate(200).unwrap(), 2);
        let new = kr.encrypt("kv/b", b"two").unwrap();
        assert_eq!(term_of(&old).unwrap(), 1);
        assert_eq!(term_of(&new).unwrap(), 2);
        assert_eq!(kr.decrypt("kv/a", &old).unwrap(), b"one");
        assert_eq!(kr.decrypt("kv/b", &new).unwrap(), b"two");
        assert_eq!(kr.status().terms, 2);
    }

    #[test]
    fn sealed_keyring_roundtrips_under_root_key_only() {
        let mut kr = Keyring::generate(1).unwrap();
        kr.rotate(2).unwrap();
        let ct = kr.encrypt("x", b"payload").unwrap();
        let sealed = kr.seal().unwrap();
        let root = Zeroizing::new(*kr.root_key());
        let back = Keyring::open(root, &sealed).unwrap();
        assert_eq!(back.decrypt("x", &ct).unwrap(), b"payload");
        assert_eq!(back.status().term, 2);
        let wrong = Zeroizing::new([0u8; KEY_LEN]);
        assert_eq!(
            Keyring::open(wrong, &sealed).unwrap_err(),
            BarrierError::Authentication
        );
    }

    #[test]
    fn debug_output_never_contains_key_bytes() {
        let kr = Keyring::generate(1).unwrap();
        let s = format!("{kr:?}");
        assert!(!s.contains(&format!("{:?}", kr.root_key())));
        assert!(s.contains("active_term"));
    }
}
