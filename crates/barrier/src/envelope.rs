//! The on-disk envelope of one encrypted value.
//!
//! ```text
//! byte 0      version (1)
//! bytes 1..5  keyring term, big endian (0 for values wrapped directly by a key)
//! bytes 5..17 random 96-bit nonce
//! rest        AES-256-GCM ciphertext || 16-byte tag
//! AAD         version || term || location
//! ```
//! Binding the location means a ciphertext copied to another path fails to open.

use crate::{random_bytes, BarrierError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// Length in bytes of every symmetric key the barrier uses.
pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

pub(crate) fn aead_key(bytes: &[u8; KEY_LEN]) -> Result<LessSafeKey, BarrierError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| BarrierError::Malformed("bad key length"))
}

fn aad(term: u32, location: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(5 + location.len());
    a.push(VERSION);
    a.extend_from_slice(&term.to_be_bytes());
    a.extend_from_slice(location);
    a
}

pub(crate) fn seal(
    key: &LessSafeKey,
    term: u32,
    location: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(HEADER_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(term, location)),
        &mut body,
    )
    .map_err(|_| BarrierError::Malformed("encryption failed"))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the term of an envelope without decrypting it.
pub(crate) fn term_of(ciphertext: &[u8]) -> Result<u32, BarrierError> {
    if ciphertext.len() < HEADER_LEN + TAG_LEN {
        return Err(BarrierError::Malformed("too short"));
    }
    if ciphertext[0] != VERSION {
        return Err(BarrierError::Malformed("unknown envelope version"));
    }
    let mut t = [0u8; 4];
    t.copy_from_slice(&ciphertext[1..5]);
    Ok(u32::from_be_bytes(t))
}

pub(crate) fn open(
    key: &LessSafeKey,
    location: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    let term = term_of(ciphertext)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&ciphertext[5..HEADER_LEN]);
    let mut body = ciphertext[HEADER_LEN..].to_vec();
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(term, location)),
            &mut body,
        )
        .map_err(|_| BarrierError::Authentication)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// Encrypts `plaintext` directly under `key` (term 0), binding `location` as AAD.
/// Used to wrap the root key with the unseal key and the keyring with the root key.
pub fn seal_with_key(
    key: &[u8; KEY_LEN],
    location: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, BarrierError> {
    seal(&aead_key(key)?, 0, location.as_bytes(), plaintext)
}

/// Opens a value sealed by [`seal_with_key`].
pub fn open_with_key(
    key: &[u8; KEY_LEN],
    location: &str,
    ciphertext: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, BarrierError> {
    open(&aead_key(key)?, location.as_bytes(), ciphertext).map(zeroize::Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_location_binding() {
        let k = [7u8; KEY_LEN];
        let ct = seal_with_key(&k, "a/b", b"secret").unwrap();
        assert_eq!(&open_with_key(&k, "a/b", &ct).unwrap()[..], b"secret");
        assert_eq!(
            open_with_key(&k, "a/c", &ct).unwrap_err(),
            BarrierError::Authentication
        );
    }

    #[test]
    fn ciphertext_moved_to_other_path_fails_authentication() {
        let k = [1u8; KEY_LEN];
        let ct = seal_with_key(&k, "sys/token/id/aaa", b"{\"policies\":[\"root\"]}").unwrap();
        assert!(open_with_key(&k, "sys/token/id/bbb", &ct).is_err());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let k = [9u8; KEY_LEN];
        let ct = seal_with_key(&k, "p", b"hello world").unwrap();
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(
                open_with_key(&k, "p", &bad).is_err(),
                "bit flip at {i} accepted"
            );
        }
    }

    #[test]
    fn truncated_and_empty_inputs_are_rejected_without_panic() {
        let k = [9u8; KEY_LEN];
        for n in 0..30 {
            let _ = open_with_key(&k, "p", &vec![1u8; n]);
        }
        assert!(matches!(
            open_with_key(&k, "p", &[]),
            Err(BarrierError::Malformed(_))
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let k = [3u8; KEY_LEN];
        let a = seal_with_key(&k, "p", b"x").unwrap();
        let b = seal_with_key(&k, "p", b"x").unwrap();
        assert_ne!(a, b);
    }
}
