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

/// A DER OCSPRequest (no nonce) asking about `leaf`, issued by `issuer` (DER certificates),
/// with a SHA-256 CertID.
pub fn build_request(leaf: &[u8], issuer: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (Ok((_, leaf)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(leaf),
        x509_parser::parse_x509_certificate(issuer),
    ) else {
        return Err(malformed("the certificates are not X.509"));
    };
    let h = HashAlg::Sha256;
    let cert_id = seq(&[
        seq(&[oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]), vec![0x05, 0x00]]),
        tlv(0x04, &h.digest(issuer.subject().as_raw())),
        tlv(
            0x04,
            &h.digest(&issuer.public_key().subject_public_key.data),
        ),
        tlv(0x02, leaf.raw_serial()),
    ]);
    Ok(seq(&[seq(&[seq(&[seq(&[cert_id])])])]))
}

/// Why an OCSP response cannot be used as evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OCSP response: {0}")]
pub struct ResponseError(pub String);

fn rerr(m: impl Into<String>) -> ResponseError {
    ResponseError(m.into())
}

/// A verified answer about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub status: CertStatus,
    /// `thisUpdate`, unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, unix seconds, if the responder gave one.
    pub next_update: Option<i64>,
}

/// Largest response examined.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How long a response without `nextUpdate` counts as fresh after its `thisUpdate`.
pub const FRESH_WITHOUT_NEXT_UPDATE: i64 = 3600;

/// Clock skew tolerated on `thisUpdate`.
const SKEW: i64 = 300;

fn expect<'a>(d: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), ResponseError> {
    match read_tlv(d) {
        Some((t, body, rest)) if t == tag => Ok((body, rest)),
        _ => Err(rerr(format!("{what}: malformed"))),
    }
}

/// Parses a DER GeneralizedTime body (`YYYYMMDDHHMMSS[.f]Z`) into unix seconds.
fn parse_generalized_time(body: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(body).ok()?;
    let s = s.strip_suffix('Z')?;
    let whole = s.split('.').next()?;
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |a: usize, b: usize| whole[a..b].parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(n(4, 6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(n(0, 4)?).ok()?, month, n(6, 8)? as u8)
        .ok()?;
    let t = time::Time::from_hms(n(8, 10)? as u8, n(10, 12)? as u8, n(12, 14)? as u8).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn verify_with(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    sig_alg_oid: &str,
    tbs: &[u8],
    sig: &[u8],
) -> bool {
    use crate::csr::KeyInfo;
    use aws_lc_rs::signature as s;
    let alg: &dyn s::VerificationAlgorithm = match (sig_alg_oid, crate::csr::key_info(spki)) {
        ("1.2.840.10045.4.3.2", KeyInfo::Ec(256)) => &s::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", KeyInfo::Ec(384)) => &s::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", KeyInfo::Ec(384)) => &s::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.113549.1.1.11", _) => &s::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &s::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &s::RSA_PKCS1_2048_8192_SHA512,
        ("1.3.101.112", _) => &s::ED25519,
        _ => return false,
    };
    s::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(tbs, sig)
        .is_ok()
}

/// Checks a DER OCSPResponse as evidence about `leaf`, issued by `issuer` (both DER
/// certificates): the response must be signed by the issuer or by a responder certificate
/// the issuer delegated with id-kp-OCSPSigning (RFC 6960 4.2.2.2), must answer for the leaf's
/// CertID, and must be fresh at `now`. Returns the leaf's status.
pub fn check_response(
    der: &[u8],
    leaf: &[u8],
    issuer: &[u8],
    now: i64,
) -> Result<Checked, ResponseError> {
    if der.len() > MAX_RESPONSE_BYTES {
        return Err(rerr("larger than 64 KiB"));
    }
    let (leaf, issuer) = match (
        x509_parser::parse_x509_certificate(leaf),
        x509_parser::parse_x509_certificate(issuer),
    ) {
        (Ok((_, l)), Ok((_, i))) => (l, i),
        _ => return Err(rerr("the certificates to check are not X.509")),
    };
    let (body, rest) = expect(der, 0x30, "OCSPResponse")?;
    if !rest.is_empty() {
        return Err(rerr("trailing bytes"));
    }
    let (status, body) = expect(body, 0x0a, "responseStatus")?;
    if status != [0] {
        return Err(rerr(format!(
            "the responder answered status {} instead of successful",
            status.first().copied().unwrap_or(0xff)
        )));
    }
    let (rb, _) = expect(body, 0xa0, "responseBytes")?;
    let (rb, _) = expect(rb, 0x30, "responseBytes")?;
    let (ty, rb) = expect(rb, 0x06, "responseType")?;
    if oid_string(ty) != "1.3.6.1.5.5.7.48.1.1" {
        return Err(rerr("not an id-pkix-ocsp-basic response"));
    }
    let (basic, _) = expect(rb, 0x04, "response")?;
    let (basic, _) = expect(basic, 0x30, "BasicOCSPResponse")?;
    let (_, _, after_tbs) = read_tlv(basic).ok_or_else(|| rerr("tbsResponseData: malformed"))?;
    let tbs_full = &basic[..basic.len() - after_tbs.len()];
    let (tbs, _) = expect(tbs_full, 0x30, "tbsResponseData")?;
    let (alg, rest) = expect(after_tbs, 0x30, "signatureAlgorithm")?;
    let (alg_oid, _) = expect(alg, 0x06, "signatureAlgorithm")?;
    let alg_oid = oid_string(alg_oid);
    let (bits, rest) = expect(rest, 0x03, "signature")?;
    let sig = match bits.split_first() {
        Some((0, sig)) => sig,
        _ => return Err(rerr("signature: malformed BIT STRING")),
    };
    // The signer: the issuer itself, or a delegated responder certificate in `certs`.
    let mut signed = verify_with(issuer.public_key(), &alg_oid, tbs_full, sig);
    if !signed && !rest.is_empty() {
        let (certs, _) = expect(rest, 0xa0, "certs")?;
        let (certs, _) = expect(certs, 0x30, "certs")?;
        for c in elements(certs).map_err(|_| rerr("certs: malformed"))? {
            let Ok((_, rc)) = x509_parser::parse_x509_certificate(c) else {
                continue;
            };
            let delegated = rc.verify_signature(Some(issuer.public_key())).is_ok()
                && rc
                    .extended_key_usage()
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.value.ocsp_signing)
                && rc.validity().not_before.timestamp() <= now
                && now <= rc.validity().not_after.timestamp();
            if delegated && verify_with(rc.public_key(), &alg_oid, tbs_full, sig) {
                signed = true;
                break;
            }
        }
    }
    if !signed {
        return Err(rerr(
            "not signed by the issuing CA or a responder it delegated",
        ));
    }
    // tbsResponseData: [0] version?, responderID, producedAt, responses, [1] extensions?
    let mut d = tbs;
    if let Some((0xa0, _, r)) = read_tlv(d) {
        d = r;
    }
    let (_, _, d) = read_tlv(d).ok_or_else(|| rerr("responderID: malformed"))?;
    let (_, d) = expect(d, 0x18, "producedAt")?;
    let (responses, _) = expect(d, 0x30, "responses")?;
    let name_hash = |h: HashAlg| h.digest(issuer.subject().as_raw());
    let key_hash = |h: HashAlg| h.digest(&issuer.public_key().subject_public_key.data);
    let serial = leaf
        .raw_serial()
        .strip_prefix(&[0u8])
        .filter(|s| !s.is_empty())
        .unwrap_or(leaf.raw_serial());
    for single in elements(responses).map_err(|_| rerr("responses: malformed"))? {
        let (sb, _) = expect(single, 0x30, "SingleResponse")?;
        let (_, _, after_id) = read_tlv(sb).ok_or_else(|| rerr("certID: malformed"))?;
        let cid = parse_cert_id(&sb[..sb.len() - after_id.len()])
            .map_err(|e| rerr(format!("certID: {e}")))?;
        if cid.serial != serial
            || cid.issuer_name_hash != name_hash(cid.hash)
            || cid.issuer_key_hash != key_hash(cid.hash)
        {
            continue;
        }
        let (t, st, d) = read_tlv(after_id).ok_or_else(|| rerr("certStatus: malformed"))?;
        let status = match t {
            0x80 => CertStatus::Good,
            0xa1 => {
                let (gt, _) = expect(st, 0x18, "revocationTime")?;
                CertStatus::Revoked(
                    parse_generalized_time(gt).ok_or_else(|| rerr("revocationTime: malformed"))?,
                )
            }
            0x82 => CertStatus::Unknown,
            _ => return Err(rerr("certStatus: malformed")),
        };
        let (tu, d) = expect(d, 0x18, "thisUpdate")?;
        let this_update =
            parse_generalized_time(tu).ok_or_else(|| rerr("thisUpdate: malformed"))?;
        let next_update = match read_tlv(d) {
            Some((0xa0, nu, _)) => {
                let (gt, _) = expect(nu, 0x18, "nextUpdate")?;
                Some(parse_generalized_time(gt).ok_or_else(|| rerr("nextUpdate: malformed"))?)
            }
            _ => None,
        };
        if this_update > now + SKEW {
            return Err(rerr("thisUpdate is in the future"));
        }
        let fresh_until = next_update.unwrap_or(this_update + FRESH_WITHOUT_NEXT_UPDATE);
        if fresh_until < now {
            return Err(rerr(format!(
                "stale: it was good until {fresh_until} (unix), now is {now}"
            )));
        }
        return Ok(Checked {
            status,
            this_update,
            next_update,
        });
    }
    Err(rerr("it does not answer for this certificate"))
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
