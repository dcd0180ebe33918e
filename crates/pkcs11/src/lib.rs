//! # custos-pkcs11
//!
//! Signs with an ECDSA P-256 key held in a PKCS#11 token (an HSM, or SoftHSM2 in tests): the
//! private key is created non-extractable and never leaves the token. [`Pkcs11Signer`]
//! implements `custos_provenance::keys::Signer`, so `custos fw sign` (and later the PKI's CA
//! keys) use it exactly like a file key.
//!
//! The token returns ECDSA signatures as r‖s (PKCS#11 `CKM_ECDSA` over a SHA-256 digest
//! computed here); they are DER-encoded before use, as every other Custos signer writes them.
#![forbid(unsafe_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use custos_provenance::keys::{KeyError, PublicKey, Signer};
use std::path::Path;
use std::sync::Mutex;

/// DER of the P-256 curve OID (`CKA_EC_PARAMS`).
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// SubjectPublicKeyInfo prefix for an uncompressed P-256 point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why the token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// Loading or initialising the module.
    #[error("PKCS#11 module {module}: {reason}")]
    Module {
        /// The module path.
        module: String,
        /// The error.
        reason: String,
    },
    /// No token with that label.
    #[error("no PKCS#11 token labelled {0:?}")]
    NoToken(String),
    /// Login failed (wrong PIN, locked token).
    #[error("login to token {token:?} failed: {reason}")]
    Login {
        /// The token label.
        token: String,
        /// The error.
        reason: String,
    },
    /// No key, or more than one, with that label.
    #[error("token {token:?}: {reason}")]
    Key {
        /// The token label.
        token: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other token error.
    #[error("PKCS#11: {0}")]
    Token(String),
}

fn token_err(e: cryptoki::error::Error) -> Pkcs11Error {
    Pkcs11Error::Token(e.to_string())
}

/// An open, logged-in session on the token that holds one signing key.
pub struct Pkcs11Signer {
    session: Mutex<Session>,
    key: ObjectHandle,
    public: PublicKey,
}

/// Opens `module`, finds the token labelled `token`, and logs in with `pin`.
fn open(module: &Path, token: &str, pin: &str) -> Result<Session, Pkcs11Error> {
    let m = |reason: String| Pkcs11Error::Module {
        module: module.display().to_string(),
        reason,
    };
    let ctx = Pkcs11::new(module).map_err(|e| m(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => return Err(m(e.to_string())),
    }
    let slot = ctx
        .get_slots_with_token()
        .map_err(token_err)?
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label() == token)
                .unwrap_or(false)
        })
        .ok_or_else(|| Pkcs11Error::NoToken(token.into()))?;
    let session = ctx.open_rw_session(slot).map_err(token_err)?;
    let pin = AuthPin::new(pin.to_string().into());
    session
        .login(UserType::User, Some(&pin))
        .map_err(|e| Pkcs11Error::Login {
            token: token.into(),
            reason: e.to_string(),
        })?;
    Ok(session)
}

fn find_one(
    s: &Session,
    token: &str,
    class: ObjectClass,
    label: &str,
) -> Result<ObjectHandle, Pkcs11Error> {
    let found = s
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(token_err)?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::Key {
            token: token.into(),
            reason: format!("no {class} labelled {label:?}"),
        }),
        _ => Err(Pkcs11Error::Key {
            token: token.into(),
            reason: format!("more than one {class} labelled {label:?}"),
        }),
    }
}

/// The SubjectPublicKeyInfo of a P-256 public key object.
fn public_key(s: &Session, token: &str, obj: ObjectHandle) -> Result<PublicKey, Pkcs11Error> {
    let bad = |reason: &str| Pkcs11Error::Key {
        token: token.into(),
        reason: reason.into(),
    };
    let attrs = s
        .get_attributes(obj, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(token_err)?;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) if p != P256_PARAMS => {
                return Err(bad("the key is not on the P-256 curve"))
            }
            // CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point.
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    let p = point.ok_or_else(|| bad("the public key has no CKA_EC_POINT"))?;
    let raw = match p.as_slice() {
        [0x04, 65, rest @ ..] if rest.len() == 65 => rest.to_vec(),
        [0x04, ..] if p.len() == 65 => p.clone(),
        _ => return Err(bad("CKA_EC_POINT is not an uncompressed P-256 point")),
    };
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&raw);
    PublicKey::from_spki_der(&spki).map_err(|e| bad(&e.to_string()))
}

impl Pkcs11Signer {
    /// Opens the signing key labelled `key_label` on token `token`.
    pub fn open(
        module: &Path,
        token: &str,
        pin: &str,
        key_label: &str,
    ) -> Result<Pkcs11Signer, Pkcs11Error> {
        let s = open(module, token, pin)?;
        let key = find_one(&s, token, ObjectClass::PRIVATE_KEY, key_label)?;
        let pubk = find_one(&s, token, ObjectClass::PUBLIC_KEY, key_label)?;
        let public = public_key(&s, token, pubk)?;
        Ok(Pkcs11Signer {
            session: Mutex::new(s),
            key,
            public,
        })
    }

    /// Generates a P-256 key pair in the token: the private key sensitive and
    /// non-extractable. Returns its public key.
    pub fn generate(
        module: &Path,
        token: &str,
        pin: &str,
        key_label: &str,
    ) -> Result<PublicKey, Pkcs11Error> {
        let s = open(module, token, pin)?;
        if find_one(&s, token, ObjectClass::PRIVATE_KEY, key_label).is_ok() {
            return Err(Pkcs11Error::Key {
                token: token.into(),
                reason: format!("a key labelled {key_label:?} already exists"),
            });
        }
        let label = key_label.as_bytes().to_vec();
        let (pubk, _) = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Verify(true),
                    Attribute::EcParams(P256_PARAMS.to_vec()),
                    Attribute::Label(label.clone()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::KeyType(KeyType::EC),
                    Attribute::Label(label),
                ],
            )
            .map_err(token_err)?;
        public_key(&s, token, pubk)
    }
}

/// DER `ECDSA-Sig-Value` from the token's fixed r‖s.
fn der_signature(rs: &[u8]) -> Option<Vec<u8>> {
    if rs.len() != 64 {
        return None;
    }
    fn int(v: &[u8]) -> Vec<u8> {
        let v = match v.iter().position(|b| *b != 0) {
            Some(i) => &v[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        if v[0] & 0x80 != 0 {
            out.push(v.len() as u8 + 1);
            out.push(0);
        } else {
            out.push(v.len() as u8);
        }
        out.extend_from_slice(v);
        out
    }
    let (r, s) = (int(&rs[..32]), int(&rs[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    Some(out)
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        let s = self
            .session
            .lock()
            .map_err(|_| KeyError::Sign("PKCS#11 session poisoned".into()))?;
        let rs = s
            .sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
            .map_err(|e| KeyError::Sign(format!("PKCS#11: {e}")))?;
        der_signature(&rs).ok_or_else(|| KeyError::Sign("the token's signature is not r||s".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn r_s_to_der_handles_high_bits_and_leading_zeros() {
        let mut rs = vec![0u8; 64];
        rs[0] = 0x80; // r needs a sign byte
        rs[31] = 1;
        rs[63] = 7; // s is small: leading zeros stripped
        let d = der_signature(&rs).unwrap();
        assert_eq!(&d[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(d[4], 0);
        assert_eq!(&d[d.len() - 3..], &[0x02, 0x01, 0x07]);
        assert!(der_signature(&rs[..63]).is_none());
    }
}
