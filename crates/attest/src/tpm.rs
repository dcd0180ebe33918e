//! TPM 2.0 structures a verifier reads (TPM 2.0 Library Part 2): `TPMS_ATTEST` of a quote,
//! `TPMT_SIGNATURE`, `TPMT_PUBLIC` (the attestation key) and its Name, and PCR selections.
//! Parsing is strict: exact lengths, no trailing bytes, sizes bounded.

use crate::wire::{Reader, Writer};
use crate::Error;
use aws_lc_rs::digest;

/// `TPM_GENERATED_VALUE`: every TPMS_ATTEST the TPM signs starts with it, and the TPM refuses
/// to sign external data that does with a restricted key.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// The largest digest (SHA-512) and the largest TPM name (alg + SHA-512).
const MAX_DIGEST: usize = 64;
const MAX_NAME: usize = 2 + MAX_DIGEST;
/// `extraData` is a TPM2B_DATA: at most the size of the largest digest.
pub const MAX_NONCE: usize = MAX_DIGEST;
/// PCRs of a PC Client TPM.
pub const PCR_COUNT: usize = 24;

/// A TPM hash algorithm (`TPM_ALG_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    /// 0x0004: accepted in event logs, never for a signature a verdict relies on.
    Sha1,
    /// 0x000B.
    Sha256,
    /// 0x000C.
    Sha384,
    /// 0x000D.
    Sha512,
}

impl HashAlg {
    /// From a `TPM_ALG_ID`.
    pub fn from_id(id: u16) -> Option<HashAlg> {
        Some(match id {
            0x0004 => HashAlg::Sha1,
            0x000B => HashAlg::Sha256,
            0x000C => HashAlg::Sha384,
            0x000D => HashAlg::Sha512,
            _ => return None,
        })
    }

    /// The `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name `tpm2_eventlog` and policies use (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// From a policy's name.
    pub fn from_name(s: &str) -> Option<HashAlg> {
        [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ]
        .into_iter()
        .find(|h| h.name() == s)
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    /// The digest of `parts`, concatenated.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut c = digest::Context::new(self.algorithm());
        for p in parts {
            c.update(p);
        }
        c.finish().as_ref().to_vec()
    }

    fn read(r: &mut Reader<'_>) -> Result<HashAlg, Error> {
        let id = r.u16()?;
        HashAlg::from_id(id).ok_or_else(|| {
            r.bad(format!(
                "hash algorithm 0x{id:04x} is not one of sha1, sha256, sha384, sha512"
            ))
        })
    }
}

/// One bank's selected PCRs (`TPMS_PCR_SELECTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub hash: HashAlg,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made (advances only while powered).
    pub clock: u64,
    /// TPM resets (power cycles) so far; never decreases.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernation) since the last reset.
    pub restart_count: u32,
    /// Whether `clock` is known never to have gone back (0: it may have).
    pub safe: bool,
}

/// A quote's `TPMS_ATTEST`, as the TPM signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// The signing key's qualified name.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// The TPM's clock.
    pub clock: ClockInfo,
    /// The TPM firmware version (vendor-defined).
    pub firmware_version: u64,
    /// The PCRs quoted.
    pub pcr_select: Vec<PcrSelection>,
    /// Digest (with the AK's signing hash) of the selected PCR values, in selection order.
    pub pcr_digest: Vec<u8>,
}

fn read_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, Error> {
    let n = r.u32()?;
    if n > 16 {
        return Err(r.bad(format!("{n} PCR banks selected; at most 16")));
    }
    let mut out: Vec<PcrSelection> = Vec::new();
    for _ in 0..n {
        let hash = HashAlg::read(r)?;
        let size = usize::from(r.u8()?);
        if !(3..=4).contains(&size) {
            return Err(r.bad(format!(
                "sizeofSelect {size}: a PC Client TPM has 24 PCRs (3 bytes)"
            )));
        }
        let bits = r.bytes(size)?;
        let mut pcrs = Vec::new();
        for (byte, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    let i = byte * 8 + bit;
                    if i >= PCR_COUNT {
                        return Err(r.bad(format!("PCR {i} selected; PCRs are 0..23")));
                    }
                    pcrs.push(i as u8);
                }
            }
        }
        if out.iter().any(|s| s.hash == hash) {
            return Err(r.bad(format!("bank {} selected twice", hash.name())));
        }
        out.push(PcrSelection { hash, pcrs });
    }
    Ok(out)
}

fn write_selection(w: &mut Writer, sel: &[PcrSelection]) {
    w.u32(sel.len() as u32);
    for s in sel {
        w.u16(s.hash.id());
        w.u8(3);
        let mut bits = [0u8; 3];
        for &p in &s.pcrs {
            if usize::from(p) < PCR_COUNT {
                bits[usize::from(p) / 8] |= 1 << (p % 8);
            }
        }
        w.bytes(&bits);
    }
}

impl Attest {
    /// Parses a quote's TPMS_ATTEST. Anything else (another attestation type, data that does
    /// not start with TPM_GENERATED_VALUE) is refused.
    pub fn parse(b: &[u8]) -> Result<Attest, Error> {
        let mut r = Reader::new(b, "TPMS_ATTEST");
        let magic = r.u32()?;
        if magic != TPM_GENERATED {
            return Err(r.bad(format!(
                "magic 0x{magic:08x} is not TPM_GENERATED_VALUE (0xff544347): not produced by a TPM"
            )));
        }
        let kind = r.u16()?;
        if kind != ST_ATTEST_QUOTE {
            return Err(r.bad(format!(
                "type 0x{kind:04x} is not TPM_ST_ATTEST_QUOTE (0x8018)"
            )));
        }
        let qualified_signer = r.tpm2b(MAX_NAME, "qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b(MAX_NONCE, "extraData")?.to_vec();
        let clock = ClockInfo {
            clock: r.u64()?,
            reset_count: r.u32()?,
            restart_count: r.u32()?,
            safe: match r.u8()? {
                0 => false,
                1 => true,
                v => return Err(r.bad(format!("clockInfo.safe is {v}, not 0 or 1"))),
            },
        };
        let firmware_version = r.u64()?;
        let pcr_select = read_selection(&mut r)?;
        let pcr_digest = r.tpm2b(MAX_DIGEST, "pcrDigest")?.to_vec();
        r.end()?;
        Ok(Attest {
            qualified_signer,
            extra_data,
            clock,
            firmware_version,
            pcr_select,
            pcr_digest,
        })
    }

    /// The wire form (what the TPM signed, for a quote this parser accepted).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(TPM_GENERATED);
        w.u16(ST_ATTEST_QUOTE);
        w.tpm2b(&self.qualified_signer);
        w.tpm2b(&self.extra_data);
        w.u64(self.clock.clock);
        w.u32(self.clock.reset_count);
        w.u32(self.clock.restart_count);
        w.u8(u8::from(self.clock.safe));
        w.u64(self.firmware_version);
        write_selection(&mut w, &self.pcr_select);
        w.tpm2b(&self.pcr_digest);
        w.0
    }
}

/// The signature scheme of a `TPMT_SIGNATURE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigScheme {
    /// TPM_ALG_ECDSA (0x0018).
    Ecdsa,
    /// TPM_ALG_RSASSA (0x0014): PKCS#1 v1.5.
    RsaSsa,
    /// TPM_ALG_RSAPSS (0x0016).
    RsaPss,
}

/// A `TPMT_SIGNATURE` over a TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The scheme.
    pub scheme: SigScheme,
    /// The hash signed.
    pub hash: HashAlg,
    /// ECDSA: r and s (big-endian, as the TPM gives them); RSA: the signature.
    pub parts: Vec<Vec<u8>>,
}

impl Signature {
    /// Parses a TPMT_SIGNATURE (ECDSA, RSASSA or RSAPSS).
    pub fn parse(b: &[u8]) -> Result<Signature, Error> {
        let mut r = Reader::new(b, "TPMT_SIGNATURE");
        let alg = r.u16()?;
        let scheme = match alg {
            0x0018 => SigScheme::Ecdsa,
            0x0014 => SigScheme::RsaSsa,
            0x0016 => SigScheme::RsaPss,
            other => {
                return Err(r.bad(format!(
                    "signature algorithm 0x{other:04x} is not ECDSA, RSASSA or RSAPSS"
                )))
            }
        };
        let hash = HashAlg::read(&mut r)?;
        let parts = match scheme {
            SigScheme::Ecdsa => vec![
                r.tpm2b(66, "signatureR")?.to_vec(),
                r.tpm2b(66, "signatureS")?.to_vec(),
            ],
            _ => vec![r.tpm2b(512, "signature")?.to_vec()],
        };
        r.end()?;
        Ok(Signature {
            scheme,
            hash,
            parts,
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u16(match self.scheme {
            SigScheme::Ecdsa => 0x0018,
            SigScheme::RsaSsa => 0x0014,
            SigScheme::RsaPss => 0x0016,
        });
        w.u16(self.hash.id());
        for p in &self.parts {
            w.tpm2b(p);
        }
        w.0
    }
}

/// The key material of a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An ECC key on NIST P-256 (0x0003) or P-384 (0x0004).
    Ecc {
        /// TPM_ECC_CURVE.
        curve: u16,
        /// Affine x.
        x: Vec<u8>,
        /// Affine y.
        y: Vec<u8>,
    },
    /// An RSA key.
    Rsa {
        /// Modulus bits.
        bits: u16,
        /// Public exponent (0 in the structure means 65537).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
    },
}

/// `TPMA_OBJECT` bits an attestation key must have.
pub mod attrs {
    /// The key cannot be duplicated.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The key's parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the private key.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// Restricted: a signing key that refuses to sign data starting with TPM_GENERATED_VALUE.
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key (storage/EK).
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;
}

/// A `TPMT_PUBLIC` (an AK's or an EK's public area).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The name algorithm.
    pub name_alg: HashAlg,
    /// `TPMA_OBJECT`.
    pub attributes: u32,
    /// The key's symmetric algorithm (alg, key bits, mode), for a storage key such as an EK.
    pub symmetric: Option<(u16, u16, u16)>,
    /// The key's signing scheme and hash, when the key fixes them (an AK does).
    pub scheme: Option<(u16, HashAlg)>,
    /// The key.
    pub key: PublicKey,
    /// The exact bytes of the TPMT_PUBLIC (the Name is computed over them).
    pub raw: Vec<u8>,
}

impl Public {
    /// Parses a `TPM2B_PUBLIC` (as `tpm2_createak -u` writes it) or a bare `TPMT_PUBLIC`.
    pub fn parse(b: &[u8]) -> Result<Public, Error> {
        // A TPM2B_PUBLIC's first two bytes are the length of the rest; a TPMT_PUBLIC's are
        // the key type (0x0001 RSA, 0x0023 ECC), which is never that length.
        let inner = match b {
            [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
                rest
            }
            _ => b,
        };
        let mut r = Reader::new(inner, "TPMT_PUBLIC");
        let kind = r.u16()?;
        let name_alg = HashAlg::read(&mut r)?;
        let attributes = r.u32()?;
        let _auth_policy = r.tpm2b(MAX_DIGEST, "authPolicy")?;
        // TPMT_SYM_DEF_OBJECT: null, or an algorithm with key bits and a mode.
        let sym = r.u16()?;
        let symmetric = if sym == 0x0010 {
            None
        } else {
            Some((sym, r.u16()?, r.u16()?))
        };
        let scheme_alg = r.u16()?;
        let scheme = if scheme_alg == 0x0010 {
            None
        } else {
            Some((scheme_alg, HashAlg::read(&mut r)?))
        };
        let key = match kind {
            0x0023 => {
                let curve = r.u16()?;
                let kdf = r.u16()?;
                if kdf != 0x0010 {
                    let _kdf_hash = r.u16()?;
                }
                let x = r.tpm2b(66, "unique.x")?.to_vec();
                let y = r.tpm2b(66, "unique.y")?.to_vec();
                PublicKey::Ecc { curve, x, y }
            }
            0x0001 => {
                let bits = r.u16()?;
                let exponent = r.u32()?;
                let modulus = r.tpm2b(512, "unique.rsa")?.to_vec();
                PublicKey::Rsa {
                    bits,
                    exponent,
                    modulus,
                }
            }
            other => {
                return Err(r.bad(format!(
                    "key type 0x{other:04x} is not RSA (0x0001) or ECC (0x0023)"
                )))
            }
        };
        r.end()?;
        Ok(Public {
            name_alg,
            attributes,
            symmetric,
            scheme,
            key,
            raw: inner.to_vec(),
        })
    }

    /// The object's Name: `nameAlg || H_nameAlg(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.name_alg.id().to_be_bytes().to_vec();
        n.extend(self.name_alg.digest(&[&self.raw]));
        n
    }

    /// Whether the key is a restricted signing key the TPM generated and cannot export: what
    /// an attestation key must be (otherwise it could sign a forged TPMS_ATTEST).
    pub fn is_attestation_key(&self) -> bool {
        use attrs::*;
        let need = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
        self.attributes & need == need && self.attributes & DECRYPT == 0
    }

    /// Verifies `sig` over `message` with this key. SHA-1 is refused here, whatever the TPM
    /// signed with (tpm2_checkquote accepts it; a collision forges a quote).
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), Error> {
        use aws_lc_rs::signature as s;
        let bad = |why: &str| Error::Signature(why.to_string());
        match (&self.key, sig.scheme) {
            (PublicKey::Ecc { curve, x, y }, SigScheme::Ecdsa) => {
                let (alg, size): (&dyn s::VerificationAlgorithm, usize) = match (curve, sig.hash) {
                    (0x0003, HashAlg::Sha256) => (&s::ECDSA_P256_SHA256_FIXED, 32),
                    (0x0004, HashAlg::Sha384) => (&s::ECDSA_P384_SHA384_FIXED, 48),
                    (c, h) => {
                        return Err(bad(&format!(
                            "ECDSA on curve 0x{c:04x} with {} is not accepted (P-256 with SHA-256, P-384 with SHA-384)",
                            h.name()
                        )))
                    }
                };
                let point = [&[4u8][..], &pad(x, size)?, &pad(y, size)?].concat();
                let mut fixed = pad(&sig.parts[0], size)?;
                fixed.extend(pad(
                    sig.parts.get(1).map(Vec::as_slice).unwrap_or(&[]),
                    size,
                )?);
                s::UnparsedPublicKey::new(alg, &point)
                    .verify(message, &fixed)
                    .map_err(|_| {
                        bad("the ECDSA signature does not verify with the attestation key")
                    })
            }
            (
                PublicKey::Rsa {
                    exponent, modulus, ..
                },
                SigScheme::RsaSsa | SigScheme::RsaPss,
            ) => {
                let pss = sig.scheme == SigScheme::RsaPss;
                let alg: &s::RsaParameters = match (pss, sig.hash) {
                    (false, HashAlg::Sha256) => &s::RSA_PKCS1_2048_8192_SHA256,
                    (false, HashAlg::Sha384) => &s::RSA_PKCS1_2048_8192_SHA384,
                    (true, HashAlg::Sha256) => &s::RSA_PSS_2048_8192_SHA256,
                    (true, HashAlg::Sha384) => &s::RSA_PSS_2048_8192_SHA384,
                    (_, h) => {
                        return Err(bad(&format!(
                            "RSA with {} is not accepted (SHA-256 or SHA-384)",
                            h.name()
                        )))
                    }
                };
                let e = if *exponent == 0 { 65537 } else { *exponent };
                let e = e.to_be_bytes();
                let e = &e[e.iter().position(|b| *b != 0).unwrap_or(3)..];
                s::RsaPublicKeyComponents {
                    n: modulus.as_slice(),
                    e,
                }
                .verify(alg, message, &sig.parts[0])
                .map_err(|_| bad("the RSA signature does not verify with the attestation key"))
            }
            _ => Err(bad("the signature's scheme does not match the key's type")),
        }
    }
}

/// Left-pads a big-endian integer to `size` bytes (the TPM drops leading zeros).
fn pad(v: &[u8], size: usize) -> Result<Vec<u8>, Error> {
    let v = &v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..];
    if v.len() > size {
        return Err(Error::Signature(format!(
            "an integer of {} bytes does not fit the curve's {size}",
            v.len()
        )));
    }
    let mut out = vec![0u8; size - v.len()];
    out.extend_from_slice(v);
    Ok(out)
}

/// The PCR digest a quote carries for these values: `H(pcr[s0] || pcr[s1] || …)` over the
/// selection's order (banks in order, PCRs ascending).
pub fn pcr_digest(
    hash: HashAlg,
    selection: &[PcrSelection],
    value: impl Fn(HashAlg, u8) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut parts = Vec::new();
    for s in selection {
        for &p in &s.pcrs {
            parts.push(value(s.hash, p)?);
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(hash.digest(&refs))
}
