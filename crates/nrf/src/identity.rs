//! The caller's identity, from its TLS client certificate: the only source the NRF trusts
//! for "who is asking" (TS 33.501 13.3.1, 13.4.1.1: the NF instance ID and NF type in a
//! request must match the certificate).

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

/// An NF as its SBA certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfIdentity {
    /// NF instance ID (lower-case UUID) from the `urn:uuid:` URI SAN.
    pub instance_id: String,
    /// NF types from the nfTypes extension (RFC 9310).
    pub nf_types: Vec<String>,
    /// DNS SANs (for `allowedNfDomains`).
    pub fqdns: Vec<String>,
}

impl NfIdentity {
    /// Whether the certificate names `nf_type`.
    pub fn has_type(&self, nf_type: &str) -> bool {
        self.nf_types.iter().any(|t| t == nf_type)
    }
}

/// Why a certificate does not name an NF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not parseable.
    #[error("the client certificate is not valid X.509")]
    Malformed,
    /// No or several `urn:uuid:` SANs.
    #[error(
        "the client certificate must carry exactly one urn:uuid: URI SAN (the NF instance ID)"
    )]
    InstanceId,
    /// No usable nfTypes extension.
    #[error("the client certificate has no valid nfTypes extension (RFC 9310)")]
    NfTypes,
}

/// Reads the NF identity from a DER certificate (already chain-verified by the TLS layer).
pub fn from_cert(der: &[u8]) -> Result<NfIdentity, IdentityError> {
    let (_, x) = X509Certificate::from_der(der).map_err(|_| IdentityError::Malformed)?;
    let mut ids = Vec::new();
    let mut fqdns = Vec::new();
    let mut nf_types = None;
    for ext in x.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => {
                            if let Some(id) = u
                                .get(..9)
                                .filter(|p| p.eq_ignore_ascii_case("urn:uuid:"))
                                .and_then(|_| crate::canonical_uuid(&u[9..]))
                            {
                                ids.push(id);
                            }
                        }
                        GeneralName::DNSName(d) => fqdns.push(d.to_ascii_lowercase()),
                        _ => {}
                    }
                }
            }
            _ if ext.oid.to_id_string() == "1.3.6.1.5.5.7.1.34" => {
                nf_types = custos_pki::der::parse_nf_types(ext.value);
            }
            _ => {}
        }
    }
    let instance_id = match ids.as_slice() {
        [one] => one.clone(),
        _ => return Err(IdentityError::InstanceId),
    };
    let nf_types = nf_types
        .filter(|t| !t.is_empty() && t.iter().all(|t| crate::is_nf_type(t)))
        .ok_or(IdentityError::NfTypes)?;
    Ok(NfIdentity {
        instance_id,
        nf_types,
        fqdns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str], types: Option<&[&str]>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["amf1.5gc.example".to_string()]).unwrap();
        for u in uris {
            p.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*u).unwrap(),
            ));
        }
        if let Some(t) = types {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            p.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    custos_pki::sba::NF_TYPES_OID,
                    custos_pki::der::nf_types(&t),
                ));
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    const ID: &str = "9E1F0B7A-6C2D-4B8E-A1F3-2D4C6E8F0A22";

    #[test]
    fn ts33310_identity_is_the_urn_uuid_san_and_the_nftypes_extension() {
        let id = from_cert(&cert(&[&format!("urn:uuid:{ID}")], Some(&["AMF"]))).unwrap();
        assert_eq!(id.instance_id, ID.to_ascii_lowercase());
        assert_eq!(id.nf_types, vec!["AMF"]);
        assert_eq!(id.fqdns, vec!["amf1.5gc.example"]);
    }

    #[test]
    fn certificates_that_do_not_name_exactly_one_nf_are_refused() {
        let two = [
            format!("urn:uuid:{ID}"),
            "urn:uuid:5b0d6c53-2f39-4d4e-9d2c-1f0a6a9f3c11".into(),
        ];
        let two: Vec<&str> = two.iter().map(String::as_str).collect();
        assert_eq!(
            from_cert(&cert(&two, Some(&["AMF"]))),
            Err(IdentityError::InstanceId)
        );
        assert_eq!(
            from_cert(&cert(&[], Some(&["AMF"]))),
            Err(IdentityError::InstanceId)
        );
        assert_eq!(
            from_cert(&cert(&["urn:uuid:../../x"], Some(&["AMF"]))),
            Err(IdentityError::InstanceId)
        );
        let one = format!("urn:uuid:{ID}");
        assert_eq!(from_cert(&cert(&[&one], None)), Err(IdentityError::NfTypes));
        assert_eq!(
            from_cert(&cert(&[&one], Some(&["TOASTER"]))),
            Err(IdentityError::NfTypes)
        );
        assert_eq!(from_cert(b"garbage"), Err(IdentityError::Malformed));
    }
}
