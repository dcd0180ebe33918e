//! `custos pki lint`: checks any certificate against the 3GPP SBA profile (TS 33.310
//! 6.1.3c, Table 6.1.3c.3-1) and lists every violation with its clause.

use crate::csr::{key_info, KeyInfo};
use crate::role::SBA_MAX_VALIDITY;
use crate::{der, sba};
use x509_parser::prelude::*;

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// The clause or table row.
    pub clause: &'static str,
    /// What is wrong.
    pub message: String,
}

const T: &str = "TS 33.310 6.1.3c Table 6.1.3c.3-1";

/// Decodes PEM or DER certificate input into DER blocks.
pub fn cert_ders(input: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if input.starts_with(b"-----BEGIN") || input.iter().take(64).any(|b| *b == b'-') {
        let mut out = Vec::new();
        for pem in Pem::iter_from_buffer(input) {
            let pem = pem.map_err(|e| format!("invalid PEM: {e}"))?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        if out.is_empty() {
            return Err("no CERTIFICATE block found".into());
        }
        Ok(out)
    } else {
        Ok(vec![input.to_vec()])
    }
}

/// Lints one DER certificate as an SBA end-entity (or, if it is a CA, as an SBA CA).
pub fn lint_sba(der_bytes: &[u8]) -> Result<Vec<Violation>, String> {
    let (rest, cert) = X509Certificate::from_der(der_bytes)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing data after the certificate".into());
    }
    let mut v = Vec::new();
    let mut bad = |clause: &'static str, m: String| v.push(Violation { clause, message: m });
    if cert.version() != X509Version::V3 {
        bad(T, "certificate is not X.509 v3".into());
    }
    let sig = cert.signature_algorithm.algorithm.to_id_string();
    let sig_ok = matches!(
        sig.as_str(),
        "1.2.840.10045.4.3.2"
            | "1.2.840.10045.4.3.3"
            | "1.2.840.113549.1.1.11"
            | "1.2.840.113549.1.1.12"
            | "1.2.840.113549.1.1.10"
    );
    if !sig_ok {
        bad(
            T,
            format!("signature algorithm {sig} is not ECDSA or RSA with SHA-256/384"),
        );
    }
    let subj = cert.subject();
    if subj.iter_country().next().is_none() {
        bad(T, "subject has no C (country)".into());
    }
    if subj.iter_organization().next().is_none() {
        bad(T, "subject has no O (home network domain)".into());
    }
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    if validity > SBA_MAX_VALIDITY as i64 + 86400 {
        bad(
            T,
            format!(
                "validity is {} days; at most 3 years is allowed",
                validity / 86400
            ),
        );
    }
    match key_info(cert.public_key()) {
        KeyInfo::Ec(256) | KeyInfo::Ec(384) => {}
        KeyInfo::Rsa(b) if b >= 2048 => {}
        other => bad(
            T,
            format!("public key {other:?} is not EC P-256/P-384 or RSA >= 2048"),
        ),
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .map(|b| b.value.ca)
        .unwrap_or(false);
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.critical {
                bad(T, "keyUsage is not critical".into());
            }
            if is_ca {
                if !ku.value.key_cert_sign() || !ku.value.crl_sign() {
                    bad(T, "CA keyUsage must include keyCertSign and cRLSign".into());
                }
            } else if !ku.value.digital_signature() {
                bad(T, "keyUsage lacks digitalSignature".into());
            } else if ku.value.key_cert_sign() || ku.value.crl_sign() {
                bad(
                    T,
                    "end-entity keyUsage must not include keyCertSign or cRLSign".into(),
                );
            }
        }
        _ => bad(T, "keyUsage extension is missing".into()),
    }
    if is_ca {
        let pl = cert
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|b| b.value.path_len_constraint);
        if pl != Some(0) && cert.subject() != cert.issuer() {
            bad(
                T,
                "intermediate CA for an SBA hierarchy must have pathLenConstraint 0".into(),
            );
        }
    }
    let mut server = false;
    if !is_ca {
        match cert.extended_key_usage() {
            Ok(Some(e)) => {
                server = e.value.server_auth;
                if !e.value.server_auth && !e.value.client_auth {
                    bad(
                        T,
                        "extendedKeyUsage has neither serverAuth nor clientAuth".into(),
                    );
                }
            }
            _ => bad(T, "extendedKeyUsage extension is missing".into()),
        }
    }
    let mut has_uuid = false;
    let mut dns = Vec::new();
    match cert.subject_alternative_name() {
        Ok(Some(san)) => {
            if !san.critical && !is_ca {
                bad(T, "subjectAltName is not critical".into());
            }
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) => {
                        if let Some(id) = u.strip_prefix("urn:uuid:") {
                            if sba::parse_nf_instance_id(id).is_some() {
                                has_uuid = true;
                            } else {
                                bad(T, format!("SAN URI {u:?} is not a valid urn:uuid"));
                            }
                        }
                    }
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    _ => {}
                }
            }
        }
        _ if !is_ca => bad(T, "subjectAltName extension is missing".into()),
        _ => {}
    }
    if !is_ca {
        if !has_uuid {
            bad(T, "no SAN URI urn:uuid:<NF instance ID>".into());
        }
        for d in &dns {
            if sba::is_nf_type(&d.to_ascii_uppercase()) {
                bad(T, format!("DNS SAN {d:?} is an NF type name; the NF type belongs in the nfTypes extension"));
            } else if !d.contains('.') {
                bad(
                    T,
                    format!("DNS SAN {d:?} is not a fully qualified domain name"),
                );
            }
        }
        if server && dns.is_empty() {
            bad(T, "a server certificate needs a DNS SAN FQDN".into());
        }
        let nf = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.34");
        match nf {
            None => bad(
                "RFC 9310 / TS 33.310 6.1.3c",
                "nfTypes extension (1.3.6.1.5.5.7.1.34) is missing".into(),
            ),
            Some(e) => {
                if e.critical {
                    bad("RFC 9310", "nfTypes extension must be non-critical".into());
                }
                match der::parse_nf_types(e.value) {
                    Some(types) if !types.is_empty() => {
                        for t in types {
                            if !sba::is_nf_type(&t) {
                                bad(
                                    "TS 29.510 NFType",
                                    format!("nfTypes holds {t:?}, not a TS 29.510 NFType value"),
                                );
                            }
                        }
                    }
                    _ => bad(
                        "RFC 9310",
                        "nfTypes is not a non-empty SEQUENCE OF IA5String".into(),
                    ),
                }
            }
        }
    }
    let has = |oid: &str| {
        cert.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
    };
    if has("2.5.29.35").is_none() {
        bad(T, "authorityKeyIdentifier is missing".into());
    }
    if has("2.5.29.14").is_none() {
        bad(T, "subjectKeyIdentifier is missing".into());
    }
    if !is_ca && has("2.5.29.31").is_none() {
        bad(T, "cRLDistributionPoints is missing".into());
    }
    if let Some(aia) = has("1.3.6.1.5.5.7.1.1") {
        if aia.critical {
            bad(T, "authorityInfoAccess must be non-critical".into());
        }
    }
    Ok(v)
}
