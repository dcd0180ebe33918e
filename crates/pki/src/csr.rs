//! CSR parsing and verification. Only the subject CN, the SANs and the public key are taken
//! from a CSR; every other requested extension is ignored, and a request for CA:TRUE is
//! refused outright.

use crate::role::KeyType;
use crate::PkiError;
use std::net::IpAddr;
use x509_parser::prelude::*;

/// The public key of a CSR or certificate, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyInfo {
    /// RSA with its modulus size in bits.
    Rsa(u32),
    /// ECDSA with its curve size (256, 384, 521).
    Ec(u32),
    /// Ed25519.
    Ed25519,
    /// Anything else.
    Other,
}

impl KeyInfo {
    /// The Vault key type.
    pub fn key_type(self) -> Option<KeyType> {
        match self {
            KeyInfo::Rsa(_) => Some(KeyType::Rsa),
            KeyInfo::Ec(_) => Some(KeyType::Ec),
            KeyInfo::Ed25519 => Some(KeyType::Ed25519),
            KeyInfo::Other => None,
        }
    }

    /// Bits (0 for Ed25519).
    pub fn bits(self) -> u32 {
        match self {
            KeyInfo::Rsa(b) | KeyInfo::Ec(b) => b,
            _ => 0,
        }
    }
}

/// Classifies a SubjectPublicKeyInfo.
pub fn key_info(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyInfo {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(r)) => KeyInfo::Rsa(r.key_size() as u32),
            _ => KeyInfo::Other,
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => KeyInfo::Ec(256),
                "1.3.132.0.34" => KeyInfo::Ec(384),
                "1.3.132.0.35" => KeyInfo::Ec(521),
                _ => KeyInfo::Other,
            }
        }
        "1.3.101.112" => KeyInfo::Ed25519,
        _ => KeyInfo::Other,
    }
}

/// What Custos takes from a verified CSR.
#[derive(Debug, Clone, PartialEq)]
pub struct CsrInfo {
    /// Subject CN.
    pub common_name: Option<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The key.
    pub key: KeyInfo,
}

/// Largest CSR accepted (PEM or DER).
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// Decodes PEM (`CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`) or base64 DER.
fn csr_der(input: &str) -> Result<Vec<u8>, PkiError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(PkiError::field("csr", "is larger than 64 KiB"));
    }
    let t = input.trim();
    if t.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(t.as_bytes())
            .map_err(|_| PkiError::field("csr", "is not valid PEM"))?;
        if !pem.label.ends_with("CERTIFICATE REQUEST") {
            return Err(PkiError::field(
                "csr",
                &format!("PEM block is {:?}, expected CERTIFICATE REQUEST", pem.label),
            ));
        }
        return Ok(pem.contents);
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(t.replace(['\n', '\r'], ""))
        .map_err(|_| PkiError::field("csr", "is neither PEM nor base64 DER"))
}

/// Parses and verifies a CSR for an end-entity certificate: a request for CA:TRUE is refused.
pub fn parse_csr(input: &str) -> Result<CsrInfo, PkiError> {
    parse(input, false)
}

/// Parses and verifies the CSR of an intermediate CA (`sign-intermediate`), which may ask for
/// CA:TRUE; the CA extensions of the result come from Custos, not from the CSR.
pub fn parse_ca_csr(input: &str) -> Result<CsrInfo, PkiError> {
    parse(input, true)
}

fn parse(input: &str, allow_ca: bool) -> Result<CsrInfo, PkiError> {
    let der = csr_der(input)?;
    let (rest, req) = X509CertificationRequest::from_der(&der)
        .map_err(|_| PkiError::field("csr", "is not a valid PKCS#10 request"))?;
    if !rest.is_empty() {
        return Err(PkiError::field(
            "csr",
            "has trailing data after the request",
        ));
    }
    // Size first: the crypto backend will not even verify signatures of weak RSA keys, and the
    // client deserves the real reason.
    if let KeyInfo::Rsa(bits) = key_info(&req.certification_request_info.subject_pki) {
        if bits < 2048 {
            return Err(PkiError::NotAllowed(format!(
                "RSA keys must be at least 2048 bits; the CSR has {bits}"
            )));
        }
    }
    req.verify_signature().map_err(|_| {
        PkiError::field(
            "csr",
            "signature does not verify (the request was not signed by the key it carries)",
        )
    })?;
    let info = &req.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string);
    let mut out = CsrInfo {
        common_name,
        dns: vec![],
        ips: vec![],
        uris: vec![],
        spki_der: info.subject_pki.raw.to_vec(),
        key: key_info(&info.subject_pki),
    };
    if let Some(exts) = req.requested_extensions() {
        for e in exts {
            match e {
                ParsedExtension::BasicConstraints(bc) if bc.ca && !allow_ca => {
                    return Err(PkiError::NotAllowed(
                        "the CSR requests CA:TRUE; Custos never issues CA certificates from a role"
                            .into(),
                    ));
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        match n {
                            GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                            GeneralName::URI(u) => out.uris.push(u.to_string()),
                            GeneralName::IPAddress(b) => match b.len() {
                                4 => out.ips.push(IpAddr::from(
                                    <[u8; 4]>::try_from(*b)
                                        .map_err(|_| PkiError::field("csr", "bad IP SAN"))?,
                                )),
                                16 => out.ips.push(IpAddr::from(
                                    <[u8; 16]>::try_from(*b)
                                        .map_err(|_| PkiError::field("csr", "bad IP SAN"))?,
                                )),
                                _ => return Err(PkiError::field("csr", "IP SAN has a bad length")),
                            },
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}
