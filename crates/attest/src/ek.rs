//! Endorsement-key certificates: the TPM manufacturer's statement that an EK lives in a
//! genuine TPM. [`verify_ek_certificate`] walks the EK certificate to a configured
//! manufacturer root and checks that it certifies exactly the EK the device presents.
//!
//! EK certificates (TCG EK Credential Profile) are not TLS certificates: the subject is often
//! empty, and the TPM's manufacturer, model and version sit in a **critical** subjectAltName
//! holding a directoryName, which general-purpose path validators refuse. This check accepts
//! that form on purpose, and refuses any other unknown critical extension.

use crate::tpm::{Public, PublicKey};
use crate::Error;
use x509_parser::prelude::*;

/// `tcg-kp-EKCertificate` (2.23.133.8.1).
const EK_EKU: &str = "2.23.133.8.1";
/// The largest chain walked.
const MAX_DEPTH: usize = 4;

fn bad(s: impl Into<String>) -> Error {
    Error::Malformed {
        what: "EK certificate",
        detail: s.into(),
    }
}

/// What the EK certificate says of the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkInfo {
    /// The issuing CA's subject (the manufacturer's EK CA).
    pub issuer: String,
    /// The certificate's serial, hex.
    pub serial: String,
    /// The TPM manufacturer, model and version attributes from the SAN, `oid=value`.
    pub tpm: Vec<String>,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    let (rest, c) =
        X509Certificate::from_der(der).map_err(|e| bad(format!("not DER X.509: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate"));
    }
    Ok(c)
}

fn unknown_critical(c: &X509Certificate<'_>) -> Option<String> {
    use x509_parser::oid_registry::*;
    let known = [
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_CERTIFICATE_POLICIES,
        OID_X509_EXT_NAME_CONSTRAINTS,
    ];
    c.extensions()
        .iter()
        .find(|e| e.critical && !known.contains(&e.oid))
        .map(|e| e.oid.to_id_string())
}

fn within(c: &X509Certificate<'_>, now: i64) -> bool {
    c.validity().not_before.timestamp() <= now && now <= c.validity().not_after.timestamp()
}

/// Checks that `ek_cert` (DER) certifies `ek`, and chains through `intermediates` to one of
/// `roots` (DER), every certificate valid at `now`.
pub fn verify_ek_certificate(
    ek_cert: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    ek: &Public,
    now: i64,
) -> Result<EkInfo, Error> {
    let leaf = parse(ek_cert)?;
    // The certified key is the EK the device presented.
    let spki = leaf.public_key();
    let same = match (&ek.key, spki.parsed()) {
        (
            PublicKey::Rsa {
                modulus, exponent, ..
            },
            Ok(x509_parser::public_key::PublicKey::RSA(k)),
        ) => {
            let trim = |v: &[u8]| v[v.iter().position(|b| *b != 0).unwrap_or(v.len())..].to_vec();
            let e = if *exponent == 0 { 65537 } else { *exponent };
            trim(k.modulus) == trim(modulus) && trim(k.exponent) == trim(&e.to_be_bytes())
        }
        (PublicKey::Ecc { x, y, .. }, Ok(x509_parser::public_key::PublicKey::EC(p))) => {
            let d = p.data();
            d.first() == Some(&4)
                && d.len() == 1 + x.len() + y.len()
                && d[1..=x.len()] == x[..]
                && d[1 + x.len()..] == y[..]
        }
        _ => false,
    };
    if !same {
        return Err(bad(
            "it certifies another key than the EK the device presented",
        ));
    }
    if !within(&leaf, now) {
        return Err(bad("outside its validity period"));
    }
    if let Some(oid) = unknown_critical(&leaf) {
        return Err(bad(format!("unknown critical extension {oid}")));
    }
    if let Ok(Some(eku)) = leaf.extended_key_usage() {
        let ek_purpose = eku.value.other.iter().any(|o| o.to_id_string() == EK_EKU);
        if !ek_purpose && !eku.value.any {
            return Err(bad(
                "its extendedKeyUsage does not include tcg-kp-EKCertificate",
            ));
        }
    }
    if let Ok(Some(bc)) = leaf.basic_constraints() {
        if bc.value.ca {
            return Err(bad("it is a CA certificate, not an EK certificate"));
        }
    }
    let mut tpm = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DirectoryName(dn) = n {
                for a in dn.iter_attributes() {
                    tpm.push(format!(
                        "{}={}",
                        a.attr_type().to_id_string(),
                        a.as_str().unwrap_or("")
                    ));
                }
            }
        }
    }
    let info = EkInfo {
        issuer: leaf.issuer().to_string(),
        serial: leaf.raw_serial_as_string(),
        tpm,
    };
    // Walk up: each issuer is found by name and must have signed its child.
    let pool: Vec<X509Certificate<'_>> = intermediates
        .iter()
        .map(|d| parse(d))
        .collect::<Result<_, _>>()?;
    let anchors: Vec<X509Certificate<'_>> =
        roots.iter().map(|d| parse(d)).collect::<Result<_, _>>()?;
    let mut child = leaf;
    for _ in 0..=MAX_DEPTH {
        if let Some(root) = anchors.iter().find(|r| {
            r.subject().as_raw() == child.issuer().as_raw()
                && child.verify_signature(Some(r.public_key())).is_ok()
        }) {
            if !within(root, now) {
                return Err(bad(format!(
                    "the root {} is outside its validity period",
                    root.subject()
                )));
            }
            return Ok(info);
        }
        let Some(parent) = pool.iter().find(|p| {
            p.subject().as_raw() == child.issuer().as_raw()
                && child.verify_signature(Some(p.public_key())).is_ok()
        }) else {
            return Err(bad(format!(
                "no configured manufacturer CA issued it (issuer {}): an EK certificate from a foreign CA",
                child.issuer()
            )));
        };
        let is_ca = matches!(parent.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let may_sign = match parent.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !is_ca || !may_sign {
            return Err(bad(format!(
                "{} is not a CA that may sign certificates",
                parent.subject()
            )));
        }
        if !within(parent, now) {
            return Err(bad(format!(
                "{} is outside its validity period",
                parent.subject()
            )));
        }
        if let Some(oid) = unknown_critical(parent) {
            return Err(bad(format!(
                "{}: unknown critical extension {oid}",
                parent.subject()
            )));
        }
        child = parent.clone();
    }
    Err(bad("the chain is longer than the limit"))
}

/// DER of each PEM `CERTIFICATE` block in `pem` (a manufacturer CA bundle).
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}
