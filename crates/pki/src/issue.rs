//! Building and signing certificates and CRLs with rcgen (aws-lc-rs backend).

use crate::der::{self, GeneralName};
use crate::policy::Approved;
use crate::role::{KeyType, Profile};
use crate::sba::NF_TYPES_OID;
use crate::PkiError;
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    SerialNumber,
};

fn ts(unix: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|_| PkiError::field("ttl", "time out of range"))
}

fn rc(e: rcgen::Error) -> PkiError {
    PkiError::Crypto(e.to_string())
}

/// Generates a key of the given type and size.
pub fn generate_key(kt: KeyType, bits: u32) -> Result<KeyPair, PkiError> {
    let k = match (kt, bits) {
        (KeyType::Ec, 384) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        (KeyType::Ec, _) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        (KeyType::Ed25519, _) => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        (KeyType::Rsa, b) => {
            let size = match b {
                3072 => rcgen::RsaKeySize::_3072,
                4096 => rcgen::RsaKeySize::_4096,
                _ => rcgen::RsaKeySize::_2048,
            };
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        }
        (KeyType::Any, _) => {
            return Err(PkiError::field(
                "key_type",
                "\"any\" can only sign CSRs; issue needs a concrete key type",
            ))
        }
    };
    k.map_err(rc)
}

/// A random positive serial of 127 bits (RFC 5280 allows up to 20 octets; Vault uses 20).
pub fn random_serial() -> Result<[u8; 16], PkiError> {
    let mut s = [0u8; 16];
    aws_lc_rs::rand::fill(&mut s)
        .map_err(|_| PkiError::Crypto("random generator failed".into()))?;
    s[0] &= 0x7f;
    if s[0] == 0 {
        s[0] = 0x01;
    }
    Ok(s)
}

/// Colon-separated lower-case hex, Vault's serial format.
pub fn serial_hex(s: &[u8]) -> String {
    s.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ku(name: &str) -> Option<KeyUsagePurpose> {
    Some(match name {
        "DigitalSignature" => KeyUsagePurpose::DigitalSignature,
        "ContentCommitment" => KeyUsagePurpose::ContentCommitment,
        "KeyEncipherment" => KeyUsagePurpose::KeyEncipherment,
        "DataEncipherment" => KeyUsagePurpose::DataEncipherment,
        "KeyAgreement" => KeyUsagePurpose::KeyAgreement,
        "CertSign" => KeyUsagePurpose::KeyCertSign,
        "CRLSign" => KeyUsagePurpose::CrlSign,
        "EncipherOnly" => KeyUsagePurpose::EncipherOnly,
        "DecipherOnly" => KeyUsagePurpose::DecipherOnly,
        _ => return None,
    })
}

fn eku(name: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match name {
        "ServerAuth" => ExtendedKeyUsagePurpose::ServerAuth,
        "ClientAuth" => ExtendedKeyUsagePurpose::ClientAuth,
        "CodeSigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "EmailProtection" => ExtendedKeyUsagePurpose::EmailProtection,
        "TimeStamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "OCSPSigning" => ExtendedKeyUsagePurpose::OcspSigning,
        "Any" => ExtendedKeyUsagePurpose::Any,
        _ => return None,
    })
}

/// AIA and CRL URLs from `config/urls`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Urls {
    /// caIssuers URLs.
    pub issuing_certificates: Vec<String>,
    /// CRL distribution points.
    pub crl_distribution_points: Vec<String>,
    /// OCSP responders.
    pub ocsp_servers: Vec<String>,
}

fn add_urls(p: &mut CertificateParams, urls: &Urls) {
    if !urls.crl_distribution_points.is_empty() {
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: urls.crl_distribution_points.clone(),
        }];
    }
    if !urls.ocsp_servers.is_empty() || !urls.issuing_certificates.is_empty() {
        let mut e = CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            der::authority_info_access(&urls.ocsp_servers, &urls.issuing_certificates),
        );
        e.set_criticality(false);
        p.custom_extensions.push(e);
    }
}

fn dn(cn: Option<&str>, s: &crate::policy::SubjectFields) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for c in &s.country {
        d.push(DnType::CountryName, c.as_str());
    }
    for o in &s.organization {
        d.push(DnType::OrganizationName, o.as_str());
    }
    for ou in &s.ou {
        d.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    for l in &s.locality {
        d.push(DnType::LocalityName, l.as_str());
    }
    for p in &s.province {
        d.push(DnType::StateOrProvinceName, p.as_str());
    }
    if let Some(cn) = cn {
        d.push(DnType::CommonName, cn);
    }
    d
}

/// Builds and signs an end-entity certificate for `public_key`.
pub fn sign_leaf(
    a: &Approved,
    public_key: &impl PublicKeyData,
    issuer: &rcgen::Issuer<'_, KeyPair>,
    urls: &Urls,
    serial: &[u8],
) -> Result<rcgen::Certificate, PkiError> {
    let mut p = CertificateParams::default();
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_before = ts(a.not_before)?;
    p.not_after = ts(a.not_after)?;
    p.distinguished_name = dn(a.common_name.as_deref(), &a.subject);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = a.key_usage.iter().filter_map(|k| ku(k)).collect();
    p.extended_key_usages = a.ext_key_usage.iter().filter_map(|k| eku(k)).collect();
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    add_urls(&mut p, urls);
    if !a.sans.is_empty() {
        // Written by hand so it can be critical with a non-empty subject (TS 33.310 6.1.3c).
        let mut san =
            CustomExtension::from_oid_content(&[2, 5, 29, 17], der::general_names(&a.sans));
        san.set_criticality(
            a.profile == Profile::Sba || p.distinguished_name.iter().next().is_none(),
        );
        p.custom_extensions.push(san);
    }
    if let Some(types) = &a.nf_types {
        let mut e = CustomExtension::from_oid_content(NF_TYPES_OID, der::nf_types(types));
        e.set_criticality(false);
        p.custom_extensions.push(e);
    }
    for (n, v) in &a.identity_extensions {
        let mut e = CustomExtension::from_oid_content(
            &crate::identity::oid(*n),
            crate::identity::value_der(v),
        );
        e.set_criticality(false);
        p.custom_extensions.push(e);
    }
    p.signed_by(public_key, issuer).map_err(rc)
}

/// Parameters of a CA certificate (root or intermediate).
#[derive(Debug, Clone)]
pub struct CaParams {
    pub common_name: String,
    pub subject: crate::policy::SubjectFields,
    pub alt_names: Vec<GeneralName>,
    pub not_before: i64,
    pub not_after: i64,
    /// -1 = unlimited.
    pub max_path_length: i64,
}

/// rcgen parameters for a CA certificate: KU keyCertSign+cRLSign (critical), BC CA:TRUE.
pub fn ca_params(c: &CaParams, urls: &Urls, serial: &[u8]) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_before = ts(c.not_before)?;
    p.not_after = ts(c.not_after)?;
    p.distinguished_name = dn(Some(&c.common_name), &c.subject);
    p.is_ca = if c.max_path_length < 0 {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::Ca(BasicConstraints::Constrained(
            u8::try_from(c.max_path_length)
                .map_err(|_| PkiError::field("max_path_length", "must be at most 255"))?,
        ))
    };
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    add_urls(&mut p, urls);
    if !c.alt_names.is_empty() {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            der::general_names(&c.alt_names),
        ));
    }
    Ok(p)
}

/// A self-signed root.
pub fn self_signed_root(
    c: &CaParams,
    key: &KeyPair,
    urls: &Urls,
    serial: &[u8],
) -> Result<rcgen::Certificate, PkiError> {
    ca_params(c, urls, serial)?.self_signed(key).map_err(rc)
}

/// A CSR for a new intermediate CA key (`intermediate/generate`).
pub fn intermediate_csr(
    common_name: &str,
    subject: &crate::policy::SubjectFields,
    key: &KeyPair,
) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(Some(common_name), subject);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.serialize_request(key).and_then(|r| r.pem()).map_err(rc)
}

/// Signs an intermediate CA certificate for `public_key`.
pub fn sign_intermediate(
    c: &CaParams,
    public_key: &impl PublicKeyData,
    issuer: &rcgen::Issuer<'_, KeyPair>,
    urls: &Urls,
    serial: &[u8],
) -> Result<rcgen::Certificate, PkiError> {
    ca_params(c, urls, serial)?
        .signed_by(public_key, issuer)
        .map_err(rc)
}

/// A CSR for an end-entity key generated locally (agents, `custos bench`).
pub fn leaf_csr(common_name: &str, key: &KeyPair) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.serialize_request(key).and_then(|r| r.pem()).map_err(rc)
}
