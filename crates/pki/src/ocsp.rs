//! OCSP (RFC 6960) request parsing and response building, with the RFC 8954 nonce and any
//! number of certificates per request (up to [`MAX_SERIALS`]). Pure: the server looks up the
//! statuses and passes the signer in.

use crate::der::{generalized_time, oid, read_tlv, seq, tlv};
use crate::PkiError;

/// Most CertIDs answered in one request.
pub const MAX_SERIALS: usize = 64;
/// Largest request accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

const OID_SHA1: &str = "1.3.14.3.2.26";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const NONCE_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 2];

/// Hash used in a CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha256,
}

impl HashAlg {
    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlg::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &aws_lc_rs::digest::SHA256,
        };
        aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
    }
}

/// One CertID of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// The CertID DER exactly as received (echoed in the response).
    pub raw: Vec<u8>,
    pub hash: HashAlg,
    pub issuer_name_hash: Vec<u8>,
    pub issuer_key_hash: Vec<u8>,
    pub serial: Vec<u8>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspRequest {
    pub cert_ids: Vec<CertId>,
    /// The nonce extension's DER (to echo), if the client sent one.
    pub nonce_extension: Option<Vec<u8>>,
}

/// An OCSP answer for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    /// Revoked at (unix seconds).
    Revoked(i64),
    Unknown,
}

fn malformed(m: &str) -> PkiError {
    PkiError::field("ocsp request", m)
}

fn oid_string(body: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in body.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < body.len() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn parse_cert_id(raw: &[u8]) -> Result<CertId, PkiError> {
    let (t, body, rest) = read_tlv(raw).ok_or_else(|| malformed("bad CertID"))?;
    if t != 0x30 || !rest.is_empty() {
        return Err(malformed("CertID is not a SEQUENCE"));
    }
    let (t, alg, body) = read_tlv(body).ok_or_else(|| malformed("bad hashAlgorithm"))?;
    if t != 0x30 {
        return Err(malformed("hashAlgorithm is not a SEQUENCE"));
    }
    let (t, oid_body, _) = read_tlv(alg).ok_or_else(|| malformed("bad hash OID"))?;
    if t != 0x06 {
        return Err(malformed("hashAlgorithm has no OID"));
    }
    let hash = match oid_string(oid_body).as_str() {
        OID_SHA1 => HashAlg::Sha1,
        OID_SHA256 => HashAlg::Sha256,
        other => return Err(malformed(&format!("unsupported CertID hash {other}"))),
    };
    let (t, name_hash, body) = read_tlv(body).ok_or_else(|| malformed("bad issuerNameHash"))?;
    let (t2, key_hash, body) = read_tlv(body).ok_or_else(|| malformed("bad issuerKeyHash"))?;
    let (t3, serial, body) = read_tlv(body).ok_or_else(|| malformed("bad serialNumber"))?;
    if t != 0x04 || t2 != 0x04 || t3 != 0x02 || !body.is_empty() {
        return Err(malformed("CertID fields have the wrong types"));
    }
    let serial = serial
        .strip_prefix(&[0u8])
        .filter(|s| !s.is_empty())
        .unwrap_or(serial);
    if serial.is_empty() || serial.len() > 20 {
        return Err(malformed("serialNumber must be 1 to 20 bytes"));
    }
    Ok(CertId {
        raw: raw.to_vec(),
        hash,
        issuer_name_hash: name_hash.to_vec(),
        issuer_key_hash: key_hash.to_vec(),
        serial: serial.to_vec(),
    })
}

/// Splits a SEQUENCE OF into its encoded elements.
fn elements(mut d: &[u8]) -> Result<Vec<&[u8]>, PkiError> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let (_, _, rest) = read_tlv(d).ok_or_else(|| malformed("truncated element"))?;
        let len = d.len() - rest.len();
        out.push(&d[..len]);
        d = rest;
    }
    Ok(out)
}

/// Parses a DER OCSPRequest.
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, PkiError> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(malformed("request too large"));
    }
    let (t, body, rest) = read_tlv(der).ok_or_else(|| malformed("not DER"))?;
    if t != 0x30 || !rest.is_empty() {
        return Err(malformed("OCSPRequest is not a SEQUENCE"));
    }
    let (t, mut tbs, _) = read_tlv(body).ok_or_else(|| malformed("no tbsRequest"))?;
    if t != 0x30 {
        return Err(malformed("tbsRequest is not a SEQUENCE"));
    }
    let mut cert_ids = Vec::new();
    let mut nonce_extension = None;
    while !tbs.is_empty() {
        let (t, b, rest) = read_tlv(tbs).ok_or_else(|| malformed("truncated tbsRequest"))?;
        match t {
            0xa0 | 0xa1 => {} // version, requestorName
            0x30 => {
                for req in elements(b)? {
                    let (rt, rb, _) = read_tlv(req).ok_or_else(|| malformed("bad Request"))?;
                    if rt != 0x30 {
                        return Err(malformed("Request is not a SEQUENCE"));
                    }
                    let (_, _, after) = read_tlv(rb).ok_or_else(|| malformed("bad reqCert"))?;
                    let cid = &rb[..rb.len() - after.len()];
                    cert_ids.push(parse_cert_id(cid)?);
                    if cert_ids.len() > MAX_SERIALS {
                        return Err(malformed(&format!(
                            "more than {MAX_SERIALS} certificates in one request"
                        )));
                    }
                }
            }
            0xa2 => {
                let (et, exts, _) =
                    read_tlv(b).ok_or_else(|| malformed("bad requestExtensions"))?;
                if et != 0x30 {
                    return Err(malformed("requestExtensions is not a SEQUENCE"));
                }
                let nonce_oid = oid(NONCE_OID);
                for ext in elements(exts)? {
                    let (_, eb, _) = read_tlv(ext).ok_or_else(|| malformed("bad extension"))?;
                    if eb.starts_with(&nonce_oid) {
                        let (_, _, after_oid) =
                            read_tlv(eb).ok_or_else(|| malformed("bad nonce"))?;
                        // extnValue OCTET STRING { OCTET STRING nonce }; RFC 8954: 1..=32 bytes.
                        let (vt, v, _) =
                            read_tlv(after_oid).ok_or_else(|| malformed("bad nonce value"))?;
                        let inner_len = read_tlv(v).map(|(_, n, _)| n.len()).unwrap_or(v.len());
                        if vt != 0x04 || inner_len == 0 || inner_len > 32 {
                            return Err(malformed("nonce must be 1 to 32 bytes (RFC 8954)"));
                        }
                        nonce_extension = Some(ext.to_vec());
                    }
                }
            }
            _ => return Err(malformed("unexpected field in tbsRequest")),
        }
        tbs = rest;
    }
    if cert_ids.is_empty() {
        return Err(malformed("no certificates requested"));
    }
    Ok(OcspRequest {
        cert_ids,
        nonce_extension,
    })
}

/// An OCSPResponse carrying only an error status (malformedRequest = 1, internalError = 2,
/// tryLater = 3, unauthorized = 6).
pub fn error_response(status: u8) -> Vec<u8> {
    seq(&[tlv(0x0a, &[status])])
}

/// The signer of responses: the issuing CA itself.
pub struct Responder<'a> {
    /// The issuer's certificate DER (included in the response).
    pub issuer_der: &'a [u8],
    /// SHA-1 of the issuer's public key bits (responderID byKey).
    pub key_hash_sha1: Vec<u8>,
    /// The signing key.
    pub key: &'a rcgen::KeyPair,
    /// DER AlgorithmIdentifier of the signature.
    pub sig_alg: Vec<u8>,
}

/// DER AlgorithmIdentifier for signatures by an issuer of this key.
pub fn signature_algorithm(key: crate::csr::KeyInfo) -> Result<Vec<u8>, PkiError> {
    Ok(match key {
        crate::csr::KeyInfo::Ec(256) => seq(&[oid(&[1, 2, 840, 10045, 4, 3, 2])]),
        crate::csr::KeyInfo::Ec(384) => seq(&[oid(&[1, 2, 840, 10045, 4, 3, 3])]),
        crate::csr::KeyInfo::Rsa(_) => {
            seq(&[oid(&[1, 2, 840, 113549, 1, 1, 11]), vec![0x05, 0x00]])
        }
        crate::csr::KeyInfo::Ed25519 => seq(&[oid(&[1, 3, 101, 112])]),
        other => {
            return Err(PkiError::Crypto(format!(
                "no OCSP signature algorithm for {other:?}"
            )))
        }
    })
}

/// Builds and signs a successful OCSPResponse.
pub fn build_response(
    entries: &[(&CertId, CertStatus)],
    now: i64,
    next_update: i64,
    nonce_extension: Option<&[u8]>,
    r: &Responder<'_>,
) -> Result<Vec<u8>, PkiError> {
    let mut singles = Vec::new();
    for (cid, status) in entries {
        let st = match status {
            CertStatus::Good => vec![0x80, 0x00],
            CertStatus::Revoked(t) => tlv(0xa1, &generalized_time(*t)),
            CertStatus::Unknown => vec![0x82, 0x00],
        };
        singles.push(seq(&[
            cid.raw.clone(),
            st,
            generalized_time(now),
            tlv(0xa0, &generalized_time(next_update)),
        ]));
    }
    let mut rd = vec![
        tlv(0xa2, &tlv(0x04, &r.key_hash_sha1)),
        generalized_time(now),
        seq(&singles),
    ];
    if let Some(n) = nonce_extension {
        rd.push(tlv(0xa1, &seq(&[n.to_vec()])));
    }
    let tbs = seq(&rd);
    use rcgen::SigningKey as _;
    let sig = r
        .key
        .sign(&tbs)
        .map_err(|e| PkiError::Crypto(e.to_string()))?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    let basic = seq(&[
        tbs,
        r.sig_alg.clone(),
        tlv(0x03, &bits),
        tlv(0xa0, &seq(&[r.issuer_der.to_vec()])),
    ]);
    let bytes = seq(&[oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 1]), tlv(0x04, &basic)]);
    Ok(seq(&[tlv(0x0a, &[0]), tlv(0xa0, &bytes)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_decoding_matches_encoding() {
        let enc = oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]);
        let (_, body, _) = read_tlv(&enc).unwrap();
        assert_eq!(oid_string(body), OID_SHA256);
    }

    #[test]
    fn garbage_requests_are_malformed_not_panics() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x04, 0x01, 0x00],
            &[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff],
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_response_is_minimal_der() {
        assert_eq!(error_response(1), vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
    }
}
