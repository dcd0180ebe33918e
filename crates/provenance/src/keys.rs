//! Public keys, key IDs and the signer trait. File keys (Ed25519, ECDSA P-256) are PKCS#8
//! documents; an HSM signer (PKCS#11) implements the same [`Signer`] trait elsewhere.
//!
//! A key's ID is the lower-case hex SHA-256 of its DER SubjectPublicKeyInfo: the value a
//! policy pins and a DSSE signature's `keyid` carries (as a hint only; DSSE says a keyid
//! must never decide trust, so verification tries every pinned key).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, ED25519,
};
use std::fmt;

/// A signature algorithm Custos signs and verifies provenance with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over P-256 with SHA-256; signatures are DER (as securesystemslib and cosign
    /// write them); verification also accepts the 64-byte r‖s form.
    EcdsaP256,
}

impl KeyAlg {
    /// The name used in key files and messages.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa-p256",
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM/DER public key or certificate this module understands.
    #[error("not a public key: {0}")]
    BadPublicKey(String),
    /// Not a PKCS#8 Ed25519 or P-256 private key.
    #[error("not a PKCS#8 Ed25519 or ECDSA P-256 private key")]
    BadPrivateKey,
    /// The signing operation failed (HSM error, RNG failure, …).
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A verification key.
#[derive(Clone)]
pub struct PublicKey {
    alg: KeyAlg,
    spki: Vec<u8>,
    key: std::sync::Arc<ParsedPublicKey>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.alg, self.key_id())
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, o: &Self) -> bool {
        self.spki == o.spki
    }
}

const OID_EC: &str = "1.2.840.10045.2.1";

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        use x509_parser::prelude::FromDer;
        let (rest, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| KeyError::BadPublicKey(format!("SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(KeyError::BadPublicKey(
                "trailing bytes after the key".into(),
            ));
        }
        let oid = spki.algorithm.algorithm.to_id_string();
        let raw = spki.subject_public_key.data.as_ref();
        let alg = match custos_pki::csr::key_info(&spki) {
            custos_pki::csr::KeyInfo::Ed25519 => KeyAlg::Ed25519,
            custos_pki::csr::KeyInfo::Ec(256) => KeyAlg::EcdsaP256,
            _ if oid == OID_EC => {
                return Err(KeyError::BadPublicKey(
                    "only the P-256 curve is accepted for ECDSA".into(),
                ))
            }
            _ => {
                return Err(KeyError::BadPublicKey(format!(
                    "algorithm {oid} is not Ed25519 or ECDSA P-256"
                )))
            }
        };
        let vk: &'static dyn signature::VerificationAlgorithm = match alg {
            KeyAlg::Ed25519 => &ED25519,
            KeyAlg::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
        };
        let key =
            ParsedPublicKey::new(vk, raw).map_err(|e| KeyError::BadPublicKey(format!("{e}")))?;
        Ok(PublicKey {
            alg,
            spki: der.to_vec(),
            key: std::sync::Arc::new(key),
        })
    }

    /// From PEM: a `PUBLIC KEY` block, or the key of a `CERTIFICATE` block.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| KeyError::BadPublicKey(format!("PEM: {e}")))?;
        match p.label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&p.contents),
            "CERTIFICATE" => Self::from_certificate_der(&p.contents),
            l => Err(KeyError::BadPublicKey(format!(
                "PEM block {l:?} is not a PUBLIC KEY or CERTIFICATE"
            ))),
        }
    }

    /// The key of a DER certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        let (_, c) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| KeyError::BadPublicKey(format!("certificate: {e}")))?;
        Self::from_spki_der(c.tbs_certificate.subject_pki.raw)
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki).to_string()
    }

    /// Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki).as_ref())
    }

    /// True if `sig` is a valid signature of `msg` by this key. P-256 signatures may be DER
    /// or the fixed 64-byte r‖s form.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            KeyAlg::Ed25519 => self.key.verify_sig(msg, sig).is_ok(),
            KeyAlg::EcdsaP256 if sig.len() == 64 => {
                // The 64-byte form (as in the DSSE spec's test vector): same point, fixed
                // encoding.
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.raw_point())
                    .map(|k| k.verify_sig(msg, sig).is_ok())
                    .unwrap_or(false)
            }
            KeyAlg::EcdsaP256 => self.key.verify_sig(msg, sig).is_ok(),
        }
    }

    fn raw_point(&self) -> Vec<u8> {
        use x509_parser::prelude::FromDer;
        x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki)
            .map(|(_, s)| s.subject_public_key.data.to_vec())
            .unwrap_or_default()
    }
}

/// Something that signs provenance: a file key, an HSM key, a keyless certificate's key.
/// The same trait signs CA material later.
pub trait Signer: Send + Sync {
    /// The verification key.
    fn public_key(&self) -> &PublicKey;
    /// Signs `msg` (the DSSE PAE). ECDSA signatures are DER.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// The key ID (hex SHA-256 of the SubjectPublicKeyInfo).
    fn key_id(&self) -> String {
        self.public_key().key_id()
    }
}

enum FileKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

/// A PKCS#8 private key held in memory (aws-lc zeroizes it on drop).
pub struct FileSigner {
    key: FileKey,
    public: PublicKey,
}

impl FileSigner {
    /// From a PKCS#8 DER document (Ed25519 v1 or v2, or ECDSA P-256).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<FileSigner, KeyError> {
        let (key, spki) = if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let spki = k.public_key().as_der().map(|d| d.as_ref().to_vec());
            (FileKey::Ed25519(k), spki)
        } else if let Ok(k) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der) {
            let spki = k.public_key().as_der().map(|d| d.as_ref().to_vec());
            (FileKey::P256(k), spki)
        } else {
            return Err(KeyError::BadPrivateKey);
        };
        let spki = spki.map_err(|_| KeyError::BadPrivateKey)?;
        Ok(FileSigner {
            key,
            public: PublicKey::from_spki_der(&spki)?,
        })
    }

    /// From a PEM `PRIVATE KEY` (PKCS#8) block.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<FileSigner, KeyError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| KeyError::BadPrivateKey)?;
        if p.label != "PRIVATE KEY" {
            return Err(KeyError::BadPrivateKey);
        }
        let der = zeroize::Zeroizing::new(p.contents);
        Self::from_pkcs8_der(&der)
    }

    /// A new key, as PKCS#8 DER (to be written to a file, mode 0600). Ed25519 keys are
    /// RFC 8410 `OneAsymmetricKey` version 1 (no embedded public key), the form OpenSSL 3.0
    /// and python `cryptography` read; [`FileSigner::from_pkcs8_der`] reads v1 and v2.
    pub fn generate(alg: KeyAlg) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = match alg {
            KeyAlg::Ed25519 => Ed25519KeyPair::generate_pkcs8v1(&rng),
            KeyAlg::EcdsaP256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            }
        }
        .map_err(|_| KeyError::Sign("key generation failed".into()))?;
        Ok(zeroize::Zeroizing::new(doc.as_ref().to_vec()))
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.key {
            FileKey::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            FileKey::P256(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign("ECDSA signing failed".into())),
        }
    }
}

/// PEM-encodes a PKCS#8 private key.
pub fn pkcs8_pem(der: &[u8]) -> zeroize::Zeroizing<String> {
    pem("PRIVATE KEY", der)
}

/// PEM with 64-column base64; every intermediate buffer is zeroized (private keys pass here).
fn pem(label: &str, der: &[u8]) -> zeroize::Zeroizing<String> {
    use base64::Engine as _;
    let b = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = zeroize::Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for line in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
