//! A TPM in software, for benchmarks and property tests only: an RSA-2048 EK and an ECDSA
//! P-256 AK held in memory, with the public areas a real TPM would report, credential
//! activation and quotes over PCR values given by the caller. It proves nothing about a
//! device; the verifier is judged against real TPMs (swtpm) in the tests.

use crate::credential::{kdfa, rsa_public_key_der};
use crate::tpm::{attrs, HashAlg, PcrSelection, Public};
use crate::wire::{Reader, Writer};
use crate::Error;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use aws_lc_rs::{cipher, hmac, rand, rsa};
use x509_parser::prelude::FromDer;

fn err(s: &str) -> Error {
    Error::Credential(s.to_string())
}

/// The endorsement key: RSA-2048 (the default template) or ECC P-256 (fast to make, for
/// fleets of thousands in benchmarks).
enum Ek {
    Rsa(rsa::PrivateDecryptingKey),
    Ecc(aws_lc_rs::agreement::PrivateKey),
}

/// An in-memory TPM.
pub struct SoftTpm {
    ek: Ek,
    ek_public: Vec<u8>,
    ak: EcdsaKeyPair,
    ak_public: Vec<u8>,
    /// The TPM clock (ms), advanced by each quote.
    pub clock: u64,
    /// The reset count.
    pub reset_count: u32,
}

/// The part of an EK's `TPMT_PUBLIC` both templates share: the type, SHA-256 names, the
/// attributes and auth policy of the TCG EK templates, and AES-128-CFB as its symmetric.
fn ek_head(key_type: u16) -> Writer {
    let mut w = Writer::default();
    w.u16(key_type);
    w.u16(HashAlg::Sha256.id());
    w.u32(
        attrs::FIXED_TPM
            | attrs::FIXED_PARENT
            | attrs::SENSITIVE_DATA_ORIGIN
            | 1 << 7
            | attrs::RESTRICTED
            | attrs::DECRYPT,
    );
    w.tpm2b(&[
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7,
        0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14,
        0x69, 0xaa,
    ]);
    w.u16(0x0006);
    w.u16(128);
    w.u16(0x0043);
    w
}

/// `TPMT_PUBLIC` of an RSA-2048 storage key (an EK from the default template's shape).
pub fn ek_public_area(modulus: &[u8]) -> Vec<u8> {
    let mut w = ek_head(0x0001);
    w.u16(0x0010);
    w.u16(2048);
    w.u32(0);
    w.tpm2b(modulus);
    w.0
}

/// `TPMT_PUBLIC` of an ECC P-256 storage key (an EK of the ECC template's shape).
pub fn ecc_ek_public_area(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut w = ek_head(0x0023);
    w.u16(0x0010);
    w.u16(0x0003);
    w.u16(0x0010);
    w.tpm2b(x);
    w.tpm2b(y);
    w.0
}

/// `TPMT_PUBLIC` of a restricted ECDSA P-256 / SHA-256 signing key (an AK).
pub fn ak_public_area(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u16(0x0023);
    w.u16(HashAlg::Sha256.id());
    w.u32(
        attrs::FIXED_TPM
            | attrs::FIXED_PARENT
            | attrs::SENSITIVE_DATA_ORIGIN
            | 1 << 6
            | attrs::RESTRICTED
            | attrs::SIGN,
    );
    w.tpm2b(&[]);
    w.u16(0x0010);
    w.u16(0x0018);
    w.u16(HashAlg::Sha256.id());
    w.u16(0x0003);
    w.u16(0x0010);
    w.tpm2b(x);
    w.tpm2b(y);
    w.0
}

impl SoftTpm {
    /// Fresh keys.
    pub fn new() -> Result<SoftTpm, Error> {
        let ek = rsa::PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048)
            .map_err(|_| err("RSA key generation"))?;
        let spki = ek
            .public_key()
            .as_der()
            .map_err(|_| err("RSA public key"))?;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
            .map_err(|_| err("RSA public key DER"))?;
        let modulus = match info.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(k)) => {
                k.modulus[k.modulus.iter().position(|b| *b != 0).unwrap_or(0)..].to_vec()
            }
            _ => return Err(err("RSA public key")),
        };
        SoftTpm::with_ek(Ek::Rsa(ek), ek_public_area(&modulus))
    }

    /// Fresh keys, with an ECC P-256 EK.
    pub fn new_ecc() -> Result<SoftTpm, Error> {
        use aws_lc_rs::agreement;
        let ek = agreement::PrivateKey::generate(&agreement::ECDH_P256)
            .map_err(|_| err("ECC key generation"))?;
        let q = ek.compute_public_key().map_err(|_| err("ECC public key"))?;
        let q = q.as_ref();
        let public = ecc_ek_public_area(&q[1..33], &q[33..65]);
        SoftTpm::with_ek(Ek::Ecc(ek), public)
    }

    fn with_ek(ek: Ek, ek_public: Vec<u8>) -> Result<SoftTpm, Error> {
        let rng = rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| err("ECDSA key generation"))?;
        let ak = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| err("ECDSA key"))?;
        let point = ak.public_key().as_ref().to_vec();
        let ak_public = ak_public_area(&point[1..33], &point[33..65]);
        Ok(SoftTpm {
            ek_public,
            ek,
            ak,
            ak_public,
            clock: 1_000_000,
            reset_count: 1,
        })
    }

    /// The EK's TPMT_PUBLIC.
    pub fn ek_public(&self) -> &[u8] {
        &self.ek_public
    }

    /// The AK's TPMT_PUBLIC.
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// The EK's SubjectPublicKeyInfo (DER), for an EK certificate.
    pub fn ek_spki(&self) -> Result<Vec<u8>, Error> {
        let p = Public::parse(&self.ek_public)?;
        match p.key {
            crate::tpm::PublicKey::Rsa {
                modulus, exponent, ..
            } => Ok(rsa_public_key_der(&modulus, exponent)),
            crate::tpm::PublicKey::Ecc { x, y, .. } => {
                // SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } with the point.
                let mut d = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200")
                    .map_err(|_| err("EK"))?;
                d.push(4);
                d.extend_from_slice(&x);
                d.extend_from_slice(&y);
                Ok(d)
            }
        }
    }

    /// `TPM2_ActivateCredential` in software: checks the outer HMAC with this AK's Name and
    /// decrypts the credential.
    pub fn activate(&self, credential_blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, Error> {
        let name = Public::parse(&self.ak_public)?.name();
        let mut r = Reader::new(credential_blob, "TPM2B_ID_OBJECT");
        let id = r.tpm2b(1024, "credentialBlob")?;
        r.end()?;
        let mut r = Reader::new(id, "TPMS_ID_OBJECT");
        let outer = r.tpm2b(64, "integrityHMAC")?.to_vec();
        let enc = r.bytes(r.remaining())?.to_vec();
        let mut r = Reader::new(secret, "TPM2B_ENCRYPTED_SECRET");
        let ct = r.tpm2b(512, "secret")?;
        r.end()?;
        let seed = match &self.ek {
            Ek::Rsa(ek) => {
                let key = rsa::OaepPrivateDecryptingKey::new(
                    rsa::PrivateDecryptingKey::from_pkcs8(
                        ek.as_der().map_err(|_| err("EK"))?.as_ref(),
                    )
                    .map_err(|_| err("EK"))?,
                )
                .map_err(|_| err("EK"))?;
                let mut seed = vec![0u8; key.min_output_size()];
                key.decrypt(
                    &rsa::OAEP_SHA256_MGF1SHA256,
                    ct,
                    &mut seed,
                    Some(b"IDENTITY\0"),
                )
                .map_err(|_| err("the secret does not decrypt with this EK"))?
                .to_vec()
            }
            Ek::Ecc(ek) => {
                use aws_lc_rs::agreement;
                // TPMS_ECC_POINT: the ephemeral key; Z = ECDH; seed = KDFe.
                let mut p = Reader::new(ct, "TPMS_ECC_POINT");
                let qx = p.tpm2b(32, "x")?.to_vec();
                let qy = p.tpm2b(32, "y")?.to_vec();
                p.end()?;
                let mine = ek.compute_public_key().map_err(|_| err("EK"))?;
                let ex = mine.as_ref()[1..33].to_vec();
                let peer = agreement::UnparsedPublicKey::new(
                    &agreement::ECDH_P256,
                    [&[4u8][..], &qx, &qy].concat(),
                );
                agreement::agree(ek, &peer, err("ECDH with the secret failed"), |z| {
                    Ok(crate::credential::kdfe(
                        HashAlg::Sha256,
                        z,
                        "IDENTITY",
                        &qx,
                        &ex,
                        256,
                    ))
                })?
            }
        };
        let hk = kdfa(HashAlg::Sha256, &seed, "INTEGRITY", &[], &[], 256)?;
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &hk),
            &[&enc[..], &name].concat(),
        );
        if aws_lc_rs::constant_time::verify_slices_are_equal(tag.as_ref(), &outer).is_err() {
            return Err(err(
                "integrity check failed: the credential is for another AK",
            ));
        }
        let sk = kdfa(HashAlg::Sha256, &seed, "STORAGE", &name, &[], 128)?;
        let k = cipher::UnboundCipherKey::new(&cipher::AES_128, &sk).map_err(|_| err("AES"))?;
        let ctx = cipher::DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16]));
        let mut d = cipher::StreamingDecryptingKey::cfb128(k, ctx).map_err(|_| err("AES"))?;
        let mut out = vec![0u8; enc.len() + 16];
        let n = d
            .update(&enc, &mut out)
            .map_err(|_| err("AES"))?
            .written()
            .len();
        let m = d
            .finish(&mut out[n..])
            .map_err(|_| err("AES"))?
            .written()
            .len();
        out.truncate(n + m);
        let mut r = Reader::new(&out, "credential");
        Ok(r.tpm2b(64, "credential")?.to_vec())
    }

    /// A quote over `pcr_values` (in selection order) with `nonce`: TPMS_ATTEST and
    /// TPMT_SIGNATURE bytes as a TPM returns them.
    pub fn quote(
        &mut self,
        nonce: &[u8],
        selection: &[PcrSelection],
        pcr_values: &[&[u8]],
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        self.clock += 1000;
        let name = Public::parse(&self.ak_public)?.name();
        let a = crate::tpm::Attest {
            qualified_signer: name,
            extra_data: nonce.to_vec(),
            clock: crate::tpm::ClockInfo {
                clock: self.clock,
                reset_count: self.reset_count,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0x2019_1023_0016_3636,
            pcr_select: selection.to_vec(),
            pcr_digest: HashAlg::Sha256.digest(pcr_values),
        };
        let msg = a.to_bytes();
        let sig = self
            .ak
            .sign(&rand::SystemRandom::new(), &msg)
            .map_err(|_| err("signing"))?;
        let s = sig.as_ref();
        let t = crate::tpm::Signature {
            scheme: crate::tpm::SigScheme::Ecdsa,
            hash: HashAlg::Sha256,
            parts: vec![s[..32].to_vec(), s[32..].to_vec()],
        };
        Ok((msg, t.to_bytes()))
    }

    /// A quote of PCRs 0-7 (SHA-256 bank) as `log` leaves them, with `nonce`.
    pub fn quote_log(
        &mut self,
        nonce: &[u8],
        log: &crate::eventlog::EventLog,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let p = log.replay();
        let bank = p
            .get(&HashAlg::Sha256)
            .ok_or_else(|| err("the log has no SHA-256 bank"))?;
        let values: Vec<&[u8]> = (0..8)
            .filter_map(|i| bank.get(i).map(Vec::as_slice))
            .collect();
        let selection = [PcrSelection {
            hash: HashAlg::Sha256,
            pcrs: (0..8).collect(),
        }];
        self.quote(nonce, &selection, &values)
    }
}
