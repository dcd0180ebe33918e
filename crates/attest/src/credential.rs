//! The verifier's half of credential activation (TPM 2.0 Library Part 1, §24 "Credential
//! Protection"; `TPM2_MakeCredential` done in software): a secret that only the TPM holding
//! the endorsement key (EK) can recover, and only for an object with the attestation key's
//! (AK's) exact Name. When the device returns the secret, the AK is proven to live in the
//! same TPM as the EK whose certificate chained to the manufacturer.
//!
//! ```text
//! seed          RSA EK: random, RSA-OAEP(label "IDENTITY") to the EK
//!               ECC EK: KDFe(ECDH(ephemeral, EK), "IDENTITY", ephemeral.x, EK.x)
//! symKey        KDFa(seed, "STORAGE", AK name, -, EK's symmetric key bits)
//! encIdentity   AES-CFB(symKey, IV 0, TPM2B(credential))
//! hmacKey       KDFa(seed, "INTEGRITY", -, -, digest bits)
//! outerHMAC     HMAC(hmacKey, encIdentity || AK name)
//! credentialBlob = TPM2B_ID_OBJECT(TPM2B(outerHMAC) || encIdentity)
//! ```
//!
//! [`tpm2_tools_file`] writes both as `tpm2_makecredential -o` does, so
//! `tpm2_activatecredential -i` reads them.

use crate::tpm::{HashAlg, Public, PublicKey};
use crate::wire::Writer;
use crate::Error;
use aws_lc_rs::{agreement, cipher, hmac, rand, rsa};

fn err(s: impl Into<String>) -> Error {
    Error::Credential(s.into())
}

fn hmac_alg(h: HashAlg) -> Result<hmac::Algorithm, Error> {
    Ok(match h {
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
        HashAlg::Sha1 => return Err(err("an EK with a SHA-1 name algorithm is not accepted")),
    })
}

/// SP 800-108 counter-mode KDF with HMAC, as the TPM's KDFa.
pub fn kdfa(
    h: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, Error> {
    let k = hmac::Key::new(hmac_alg(h)?, key);
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + h.size());
    let mut counter: u32 = 0;
    while out.len() < bytes {
        counter += 1;
        let mut c = hmac::Context::with_key(&k);
        c.update(&counter.to_be_bytes());
        c.update(label.as_bytes());
        c.update(&[0]);
        c.update(context_u);
        c.update(context_v);
        c.update(&bits.to_be_bytes());
        out.extend_from_slice(c.sign().as_ref());
    }
    out.truncate(bytes);
    Ok(out)
}

/// SP 800-56A concatenation KDF, as the TPM's KDFe.
pub fn kdfe(
    h: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + h.size());
    let mut counter: u32 = 0;
    while out.len() < bytes {
        counter += 1;
        out.extend(h.digest(&[
            &counter.to_be_bytes(),
            z,
            label.as_bytes(),
            &[0],
            party_u,
            party_v,
        ]));
    }
    out.truncate(bytes);
    out
}

/// A credential challenge for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `TPM2B_ID_OBJECT` (with its size).
    pub credential_blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` (with its size).
    pub secret: Vec<u8>,
}

/// DER of an RSA SubjectPublicKeyInfo for `n`, `e` (aws-lc-rs takes keys as DER).
fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(l: usize) -> Vec<u8> {
        if l < 0x80 {
            vec![l as u8]
        } else {
            let b = (l as u32).to_be_bytes();
            let b = &b[b.iter().position(|x| *x != 0).unwrap_or(3)..];
            let mut v = vec![0x80 | b.len() as u8];
            v.extend_from_slice(b);
            v
        }
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend(len(body.len()));
        v.extend_from_slice(body);
        v
    }
    fn int(x: &[u8]) -> Vec<u8> {
        let x = &x[x
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(x.len().saturating_sub(1))..];
        let mut body = Vec::new();
        if x.first().is_some_and(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(x);
        tlv(0x02, &body)
    }
    let rsa_key = tlv(0x30, &[int(n), int(e)].concat());
    let mut bits = vec![0u8];
    bits.extend(rsa_key);
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let alg = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    tlv(0x30, &[&alg[..], &tlv(0x03, &bits)].concat())
}

/// `TPM2_MakeCredential` for the EK `ek` and the object named `ak_name`: `credential` (at most
/// the EK's name-digest size) can be recovered only by `TPM2_ActivateCredential` in that TPM.
pub fn make_credential(ek: &Public, ak_name: &[u8], credential: &[u8]) -> Result<Challenge, Error> {
    let h = ek.name_alg;
    if credential.is_empty() || credential.len() > h.size() {
        return Err(err(format!(
            "the credential must be 1..={} bytes",
            h.size()
        )));
    }
    let sym_bits = match ek.symmetric {
        Some((0x0006, bits, 0x0043)) if bits == 128 || bits == 256 => u32::from(bits),
        _ => {
            return Err(err(
                "the EK's symmetric algorithm is not AES-CFB (not a storage key)",
            ))
        }
    };
    if ek.attributes & crate::tpm::attrs::RESTRICTED == 0
        || ek.attributes & crate::tpm::attrs::DECRYPT == 0
    {
        return Err(err("the EK is not a restricted decryption key"));
    }
    let (seed, secret) = match &ek.key {
        PublicKey::Rsa {
            exponent, modulus, ..
        } => {
            let mut seed = vec![0u8; h.size()];
            rand::fill(&mut seed).map_err(|_| err("no randomness"))?;
            let e = if *exponent == 0 { 65537 } else { *exponent };
            let key = rsa::PublicEncryptingKey::from_der(&rsa_spki(modulus, &e.to_be_bytes()))
                .map_err(|e| err(format!("the EK's RSA key: {e}")))?;
            let oaep = rsa::OaepPublicEncryptingKey::new(key)
                .map_err(|_| err("the EK's RSA key cannot do OAEP"))?;
            let alg = match h {
                HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
                HashAlg::Sha1 => return Err(err("SHA-1 EK")),
            };
            let mut out = vec![0u8; oaep.ciphertext_size()];
            let ct = oaep
                .encrypt(alg, &seed, &mut out, Some(b"IDENTITY\0"))
                .map_err(|_| err("RSA-OAEP encryption of the seed failed"))?;
            (seed, ct.to_vec())
        }
        PublicKey::Ecc { curve, x, y } => {
            let (alg, size) = match curve {
                0x0003 => (&agreement::ECDH_P256, 32),
                0x0004 => (&agreement::ECDH_P384, 48),
                c => return Err(err(format!("EK curve 0x{c:04x} is not P-256 or P-384"))),
            };
            let pad = |v: &[u8]| -> Result<Vec<u8>, Error> {
                let v = &v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..];
                if v.len() > size {
                    return Err(err("an EK coordinate is larger than the curve"));
                }
                let mut o = vec![0u8; size - v.len()];
                o.extend_from_slice(v);
                Ok(o)
            };
            let (ex, ey) = (pad(x)?, pad(y)?);
            let peer = agreement::UnparsedPublicKey::new(alg, [&[4u8][..], &ex, &ey].concat());
            let mine = agreement::EphemeralPrivateKey::generate(alg, &rand::SystemRandom::new())
                .map_err(|_| err("ephemeral key generation failed"))?;
            let public = mine
                .compute_public_key()
                .map_err(|_| err("ephemeral public key"))?;
            let p = public.as_ref();
            let (qx, qy) = (&p[1..=size], &p[size + 1..]);
            let bits = (h.size() * 8) as u32;
            let seed =
                agreement::agree_ephemeral(mine, peer, err("ECDH with the EK failed"), |z| {
                    Ok(kdfe(h, z, "IDENTITY", qx, &ex, bits))
                })?;
            let mut w = Writer::default();
            w.tpm2b(qx);
            w.tpm2b(qy);
            (seed, w.0)
        }
    };
    let sym_key = kdfa(h, &seed, "STORAGE", ak_name, &[], sym_bits)?;
    let mut plain = Writer::default();
    plain.tpm2b(credential);
    let enc_identity = aes_cfb(&sym_key, &plain.0)?;
    let hmac_key = kdfa(h, &seed, "INTEGRITY", &[], &[], (h.size() * 8) as u32)?;
    let k = hmac::Key::new(hmac_alg(h)?, &hmac_key);
    let mut c = hmac::Context::with_key(&k);
    c.update(&enc_identity);
    c.update(ak_name);
    let outer = c.sign();
    let mut id = Writer::default();
    id.tpm2b(outer.as_ref());
    id.bytes(&enc_identity);
    let mut blob = Writer::default();
    blob.tpm2b(&id.0);
    let mut sec = Writer::default();
    sec.tpm2b(&secret);
    Ok(Challenge {
        credential_blob: blob.0,
        secret: sec.0,
    })
}

fn aes_cfb(key: &[u8], plain: &[u8]) -> Result<Vec<u8>, Error> {
    let alg = match key.len() {
        16 => &cipher::AES_128,
        32 => &cipher::AES_256,
        _ => return Err(err("AES key size")),
    };
    let key = cipher::UnboundCipherKey::new(alg, key).map_err(|_| err("AES key"))?;
    let ctx = cipher::EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16]));
    let mut k =
        cipher::StreamingEncryptingKey::less_safe_cfb128(key, ctx).map_err(|_| err("AES-CFB"))?;
    let mut out = vec![0u8; plain.len() + 16];
    let n = k
        .update(plain, &mut out)
        .map_err(|_| err("AES-CFB"))?
        .written()
        .len();
    let (_, fin) = k.finish(&mut out[n..]).map_err(|_| err("AES-CFB"))?;
    let m = fin.written().len();
    out.truncate(n + m);
    Ok(out)
}

/// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential -i` reads: magic
/// 0xBADCC0DE, version 1, the TPM2B_ID_OBJECT, the TPM2B_ENCRYPTED_SECRET.
pub fn tpm2_tools_file(c: &Challenge) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(0xBADC_C0DE);
    w.u32(1);
    w.bytes(&c.credential_blob);
    w.bytes(&c.secret);
    w.0
}

/// Writes the RSA SubjectPublicKeyInfo of an RSA TPM key (for tests and tools).
pub fn rsa_public_key_der(modulus: &[u8], exponent: u32) -> Vec<u8> {
    let e = if exponent == 0 { 65537 } else { exponent };
    rsa_spki(modulus, &e.to_be_bytes())
}
